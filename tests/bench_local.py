"""Benchmark: the local model's tokens/s through litellm next to raw llama-cpp-python, in one run.

    .venv/bin/python tests/bench_local.py [--tokens 128] [--rounds 5]

Both paths load the same GGUF with the same settings, continue the same transcript greedily with the
same stop sequences, and alternate round by round so that drift in the machine's speed hits both.
Each call starts from an empty KV cache on both paths (research_kit resets it so that sampled text does not
depend on earlier prompts); a fourth path shows raw llama-cpp-python reusing the KV cache, i.e. what the reset costs.
Target: the litellm path keeps at least 0.95 of raw llama-cpp-python's tokens/s. A third path asks for
logprobs (top 5 per token, recorded by a logits processor) and prints its cost against the plain litellm path.
"""
import argparse
import time

import research_kit.local as local  # registers local/gemma-3-270m; import before litellm
import litellm
import llama_cpp

# The assistant turn is a prefill: the model continues the story, so every call generates max_tokens.
MESSAGES = [{"role": "user", "content": "Write a long story about a dragon who learns to bake bread."},
            {"role": "assistant", "content": "Once upon a time, in a land of mountains and rivers,"}]


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--tokens", type=int, default=128, help="max_tokens per call")
    ap.add_argument("--rounds", type=int, default=5, help="calls per path")
    args = ap.parse_args()

    lm = local.LocalModel.get()
    raw = llama_cpp.Llama(model_path=str(lm.path), n_ctx=lm.n_ctx, n_threads=lm.n_threads,
                          n_threads_batch=lm.n_threads, verbose=False)
    text = local.format_transcript(MESSAGES)
    stop = list(local.load_transcript()["stop"])

    def run_raw(reset: bool = True):
        t = time.perf_counter()
        if reset: raw.reset()
        out = raw.create_completion(text, max_tokens=args.tokens, temperature=0, stop=stop)
        return out["usage"]["completion_tokens"], time.perf_counter() - t

    def run_litellm():
        t = time.perf_counter()
        r = litellm.completion(model="local/gemma-3-270m", messages=MESSAGES, max_tokens=args.tokens, temperature=0)
        return r.usage.completion_tokens, time.perf_counter() - t

    def run_logprobs():
        t = time.perf_counter()
        r = litellm.completion(model="local/gemma-3-270m", messages=MESSAGES, max_tokens=args.tokens, temperature=0,
                               logprobs=True, top_logprobs=5)
        assert len(r.choices[0].logprobs["content"]) > 0
        return r.usage.completion_tokens, time.perf_counter() - t

    run_raw(); run_litellm(); run_logprobs()  # warm all three
    names = ["raw llama-cpp-python", "litellm local/gemma-3-270m", "litellm + logprobs (top 5)", "raw, KV cache reused"]
    totals = {n: [0, 0.0] for n in names}
    for i in range(args.rounds):
        order = list(zip(names, [run_raw, run_litellm, run_logprobs, lambda: run_raw(reset=False)]))
        for name, fn in (order if i % 2 == 0 else order[::-1]):
            n, s = fn()
            totals[name][0] += n; totals[name][1] += s
    raw.close()

    print(f"local model tokens/s, {args.rounds} calls x max_tokens={args.tokens}, n_threads={lm.n_threads}, temperature 0")
    rates = {}
    for name, (n, s) in totals.items():
        rates[name] = n / s
        print(f"  {name:28s} {n:6d} tokens in {s:7.2f} s  = {rates[name]:6.1f} tokens/s")
    ratio = rates["litellm local/gemma-3-270m"] / rates["raw llama-cpp-python"]
    print(f"  ratio litellm / raw: {ratio:.3f} (target >= 0.95: {'met' if ratio >= 0.95 else 'NOT met'})")
    lp = rates["litellm + logprobs (top 5)"] / rates["litellm local/gemma-3-270m"]
    print(f"  ratio with logprobs / without: {lp:.3f} (no target; the price of recording 262k-way log-softmaxes per token)")
    kv = rates["raw llama-cpp-python"] / rates["raw, KV cache reused"]
    print(f"  ratio raw with reset / raw reusing the KV cache: {kv:.3f} (the price of order-independent sampling)")


if __name__ == "__main__":
    main()
