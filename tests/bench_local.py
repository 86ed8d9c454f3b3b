"""Benchmark: the local model's tokens/s through litellm next to raw llama-cpp-python, in one run, and the CPU probe.

    .venv/bin/python tests/bench_local.py [--tokens 128] [--rounds 5]

Every raw path loads the same GGUF with the same context and threads, continues the same transcript greedily with
the same stop sequences, and the paths alternate round by round so that drift in the machine's speed hits all.
1. Extra buffer types: research_kit's chosen setting (`research_kit.llama_probe`) beside llama.cpp's own default
   (extra buffer types on: AMX kernels, CPU weight repacking) where that default runs on this CPU (a child process
   tries it first: on a CPU with AMX it dies), and beside extra buffer types off. Load time and tokens/s for each.
2. litellm: `local/gemma-3-270m` keeps at least 0.95 of raw llama-cpp-python's tokens/s at the same setting (target).
   Each call starts from an empty KV cache on both paths (research_kit resets it so that sampled text does not depend
   on earlier prompts); another path shows raw llama-cpp-python reusing the KV cache, i.e. what the reset costs. A
   path asking for logprobs (top 5 per token, recorded by a logits processor) shows that feature's cost.
3. The probe: what the first use on a new machine pays once (child processes that load the model and generate a
   few tokens), and what every later process pays to read the remembered verdict.
"""
import argparse
import statistics
import time

import research_kit.local as local  # registers local/gemma-3-270m; import before litellm
import research_kit.llama_probe as probe
import litellm

# The assistant turn is a prefill: the model continues the story, so every call generates max_tokens.
MESSAGES = [{"role": "user", "content": "Write a long story about a dragon who learns to bake bread."},
            {"role": "assistant", "content": "Once upon a time, in a land of mountains and rivers,"}]


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--tokens", type=int, default=128, help="max_tokens per call")
    ap.add_argument("--rounds", type=int, default=5, help="calls per path")
    args = ap.parse_args()

    lm = local.LocalModel.get()
    chosen, path = lm.extra_bufts, lm.path
    default_runs = probe.run_probe(path, "on")  # llama.cpp's default, tried where a crash cannot take this process down
    settings = [True, False] if default_runs["outcome"] == "ok" else [False]
    raws, load_s = {}, {}
    for s in settings:
        t = time.perf_counter()
        raws[s] = probe.load_llama(path, s, n_ctx=lm.n_ctx, n_threads=lm.n_threads, n_threads_batch=lm.n_threads)
        load_s[s] = time.perf_counter() - t
    text = local.format_transcript(MESSAGES)
    stop = list(local.load_transcript()["stop"])

    def run_raw(setting, reset: bool = True, stops: bool = True):
        t = time.perf_counter()
        if reset: raws[setting].reset()
        out = raws[setting].create_completion(text, max_tokens=args.tokens, temperature=0, stop=stop if stops else [])
        return out["usage"]["completion_tokens"], time.perf_counter() - t

    def run_litellm(**kw):
        t = time.perf_counter()
        r = litellm.completion(model="local/gemma-3-270m", messages=MESSAGES, max_tokens=args.tokens, temperature=0, **kw)
        if kw: assert len(r.choices[0].logprobs["content"]) > 0
        return r.usage.completion_tokens, time.perf_counter() - t

    on_off = lambda s: "on" if s else "off"
    # on and off compute slightly different numbers, so greedy text (and where a stop sequence ends it) can differ:
    # they are compared without stop sequences, each generating max_tokens
    paths = {f"raw {on_off(s)}, no stop" + (" (llama.cpp's default)" if s else ""): (lambda s=s: run_raw(s, stops=False))
             for s in settings}
    raw_chosen = f"raw {on_off(chosen)}"
    paths[raw_chosen] = lambda: run_raw(chosen)
    paths[f"litellm local/gemma-3-270m ({on_off(chosen)})"] = run_litellm
    paths["litellm + logprobs (top 5)"] = lambda: run_litellm(logprobs=True, top_logprobs=5)
    paths[f"raw {on_off(chosen)}, KV cache reused"] = lambda: run_raw(chosen, reset=False)
    for fn in paths.values(): fn()  # warm every path
    totals = {n: [0, 0.0] for n in paths}
    for i in range(args.rounds):
        order = list(paths.items())
        for name, fn in (order if i % 2 == 0 else order[::-1]):
            n, s = fn()
            totals[name][0] += n; totals[name][1] += s
    for llm in raws.values(): llm.close()

    print(f"local model tokens/s, {args.rounds} calls x max_tokens={args.tokens}, n_threads={lm.n_threads}, temperature 0")
    print(f"  build: {probe.system_info()}")
    print(f"  chosen setting: extra buffer types {on_off(chosen)} ({lm.verdict.get('source')})")
    if default_runs["outcome"] != "ok":
        print(f"  llama.cpp's default (extra buffer types on) does not run here: the probe child ended with "
              f"{default_runs['outcome']} {default_runs['detail']}".rstrip())
    rates = {}
    for name, (n, s) in totals.items():
        rates[name] = n / s
        print(f"  {name:46s} {n:6d} tokens in {s:7.2f} s  = {rates[name]:6.1f} tokens/s")
    for s, sec in load_s.items():
        print(f"  load time, extra buffer types {on_off(s):3s}: {sec:.2f} s")
    if True in raws and False in raws:
        on, off = rates["raw on, no stop (llama.cpp's default)"], rates["raw off, no stop"]
        print(f"  ratio chosen ({on_off(chosen)}) / llama.cpp's default (on): {(on if chosen else off) / on:.3f}")
        print(f"  ratio off / on: {off / on:.3f} (what the safe setting costs where the default also runs)")
    ratio = rates[f"litellm local/gemma-3-270m ({on_off(chosen)})"] / rates[raw_chosen]
    print(f"  ratio litellm / raw at the chosen setting: {ratio:.3f} (target >= 0.95: {'met' if ratio >= 0.95 else 'NOT met'})")
    lp = rates["litellm + logprobs (top 5)"] / rates[f"litellm local/gemma-3-270m ({on_off(chosen)})"]
    print(f"  ratio with logprobs / without: {lp:.3f} (no target; the price of recording 262k-way log-softmaxes per token)")
    kv = rates[raw_chosen] / rates[f"raw {on_off(chosen)}, KV cache reused"]
    print(f"  ratio raw with reset / raw reusing the KV cache: {kv:.3f} (the price of order-independent sampling)")

    fresh = [probe.probe(path) for _ in range(3)]
    print(f"\nthe probe, once per build and CPU: {statistics.median(v['seconds'] for v in fresh):.2f} s "
          f"(median of 3; {len(fresh[0]['probes'])} child process(es), verdict: {fresh[0]['status']}, "
          f"extra buffer types {on_off(fresh[0]['extra_bufts'])})")
    t = time.perf_counter()
    for _ in range(100): probe.verdict(path)
    print(f"every later process: {(time.perf_counter() - t) * 10:.2f} ms to find and read the remembered verdict")

if __name__ == "__main__":
    main()
