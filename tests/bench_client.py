"""Benchmark: InferenceAPI's overhead on uncached calls, its cached replay speed, and how lookups scale with cache size.

    .venv/bin/python tests/bench_client.py [--requests 2000] [--rounds 3] [--cached 10000] [--extra 90000] [--quick]

1. Uncached: `--requests` distinct prompts at concurrency 50 against the scripted server (`python -m
   research_kit.testing --latency 0.02`, a subprocess) through InferenceAPI.batch with a fresh empty cache (misses
   looked up, responses written) and through bare litellm.acompletion under an asyncio.Semaphore. Each path runs in
   its own fresh process after one untimed warm-up request, back to back in a round (order alternating), with new
   prompts every round; the ratio is taken within each round, so that drift in the machine's speed (large on a
   shared VM) hits both sides of it, and the median of the rounds' ratios is compared. Target: api / bare <= 1.10.
2. Cached replay: `--cached` responses put in an InferenceAPI cache, replayed by api.batch over freshly built Prompt
   objects, next to the same prompts replayed from litellm's disk cache (litellm.Cache(type="disk")). Targets: ours
   at least 20x faster per response, and at least 10,000 responses/s. The floor (a raw diskcache get + one sha256 +
   one json.loads per response on the same store) is printed for reference.
3. Size scaling: the same replay from a cache of `--cached` entries and one with `--extra` unrelated entries more,
   alternated over `--reps` trials (order flipping each trial); the ratio big / small is taken within each trial and
   the median of those ratios is compared, so that one slow replay cannot decide the verdict. Target: big / small <= 1.5.
All litellm hits are timed unless `--litellm-sample N` (a random N, per hit extrapolated): at ~3 ms a hit, 10,000 take ~35 s.
Exits 1 when a target is missed (not with --quick: a smoke run whose small sizes say nothing about the targets).
litellm's cache-hit path needs fastapi, orjson and soundfile (in the dev extra).
"""
import argparse
import asyncio
import contextlib
import hashlib
import json
import random
import statistics
import subprocess
import sys
import tempfile
import time
import urllib.request
from pathlib import Path

import research_kit.client as client  # litellm only through client._litellm(), which configures it offline first
from research_kit.cache import DiskCache
from research_kit.messages import LLMResponse, Prompt, approx_tokens

ROOT = Path(__file__).resolve().parents[1]
MODEL, KEY = "openai/bench-model", "sk-bench-no-key"
QUICK = dict(requests=300, rounds=1, cached=2000, extra=18_000, reps=2, litellm_sample=500)


@contextlib.contextmanager
def scripted_server(latency: float):
    "A scripted server in its own process (so its CPU is not ours); yields its base URL; always killed."
    proc = subprocess.Popen([sys.executable, "-m", "research_kit.testing", "--latency", str(latency)],
                            stdout=subprocess.PIPE, text=True, cwd=ROOT)
    try:
        url = proc.stdout.readline().strip()
        if not url.startswith("http"): raise RuntimeError(f"scripted server did not start (printed {url!r})")
        yield url
    finally:
        proc.kill(); proc.wait()


def server_requests(url: str) -> int:
    with urllib.request.urlopen(url.removesuffix("/v1") + "/_stats") as r: return json.load(r)["requests"]


# ---- 1. uncached: each path in a fresh child process -------------------------------------------------------------

def child(args):
    "Time one path over distinct prompts; print its wall and CPU seconds (and entries stored) as a JSON line."
    texts = [f"bench {args.child} round {args.round} prompt {i}: what is {i} plus {args.round}?" for i in range(args.requests)]
    warm = f"warm-up {args.child} round {args.round}"
    if args.child == "uncached-bare":
        litellm = client._litellm()

        async def go():
            sem = asyncio.Semaphore(args.concurrency)
            async def one(text):
                async with sem:
                    r = await litellm.acompletion(model=MODEL, api_base=args.url, api_key=KEY, max_retries=0,
                                                  messages=[{"role": "user", "content": text}])
                    return r.choices[0].message.content
            await one(warm)
            t0, c0 = time.perf_counter(), time.process_time()
            out = await asyncio.gather(*(one(t) for t in texts))
            return time.perf_counter() - t0, time.process_time() - c0, out
        wall, cpu, out = asyncio.run(go())
        stored = None
    else:
        with tempfile.TemporaryDirectory() as d:
            api = client.InferenceAPI(cache_dir=d, concurrency=args.concurrency)
            api.batch([warm], MODEL, progress=False, api_base=args.url, api_key=KEY)
            t0, c0 = time.perf_counter(), time.process_time()  # process_time counts the client's loop thread too
            res = api.batch(texts, MODEL, progress=False, api_base=args.url, api_key=KEY)
            wall, cpu = time.perf_counter() - t0, time.process_time() - c0
            out, stored = [r[0].completion for r in res], len(api.cache) - 1
            assert not any(r[0].cached for r in res), "a fresh cache served a hit"
            api.close()
    assert out == texts, "the server did not echo every prompt"
    print(json.dumps({"wall_s": wall, "cpu_s": cpu, "stored": stored}))


def bench_uncached(args, url: str) -> float:
    runs = {"uncached-bare": [], "uncached-api": []}
    for r in range(args.rounds):
        order = list(runs) if r % 2 == 0 else list(runs)[::-1]
        for kind in order:
            cmd = [sys.executable, __file__, "--child", kind, "--url", url, "--round", str(r),
                   "--requests", str(args.requests), "--concurrency", str(args.concurrency)]
            p = subprocess.run(cmd, capture_output=True, text=True, cwd=ROOT)
            if p.returncode: raise RuntimeError(f"child {kind} failed:\n{p.stderr[-3000:]}")
            res = json.loads(p.stdout.strip().splitlines()[-1])
            if kind == "uncached-api" and res["stored"] != args.requests:
                raise RuntimeError(f"InferenceAPI stored {res['stored']} of {args.requests} responses")
            runs[kind].append(res)
        b, a = runs["uncached-bare"][-1], runs["uncached-api"][-1]
        print(f"   round {r + 1}: bare litellm {b['wall_s']:6.2f} s (cpu {b['cpu_s']:5.2f} s), "
              f"InferenceAPI {a['wall_s']:6.2f} s (cpu {a['cpu_s']:5.2f} s)")
    med = {k: {m: statistics.median(x[m] for x in v) for m in ("wall_s", "cpu_s")} for k, v in runs.items()}
    bare, api = med["uncached-bare"]["wall_s"], med["uncached-api"]["wall_s"]
    pairs = [a["wall_s"] / b["wall_s"] for a, b in zip(runs["uncached-api"], runs["uncached-bare"])]
    print(f"   bare litellm.acompletion  median {bare:6.2f} s  ({args.requests / bare:4.0f} requests/s)")
    print(f"   InferenceAPI.batch        median {api:6.2f} s  ({args.requests / api:4.0f} requests/s)")
    print(f"   per-round ratios api / bare: {', '.join(f'{x:.3f}' for x in pairs)}")
    cpu = med["uncached-api"]["cpu_s"] / med["uncached-bare"]["cpu_s"]
    print(f"   client CPU time, median api / bare: {cpu:.3f} (informational; the client is CPU-bound here)")
    return statistics.median(pairs)


# ---- 2 and 3. cached replay ---------------------------------------------------------------------------------------

def fill(api, km, texts, chunk=10_000):
    "Put one echo response per text into api's cache, keyed exactly as api.batch will look it up."
    for s in range(0, len(texts), chunk):
        items = []
        for i, t in enumerate(texts[s:s + chunk], s):
            h = Prompt.user(t).content_hash
            items.append((km(h, 0), km.parts(h, 0), LLMResponse(model_id=MODEL, completion=t, finish_reason="stop",
                          prompt_tokens=approx_tokens(t), completion_tokens=approx_tokens(t), latency=0.02,
                          provider_id=f"chatcmpl-bench{i}")))
        api.cache.put_many(items)


def replay(api, texts, params) -> float:
    "Seconds for api.batch over fresh Prompt objects (built before the timer); checks every one is a correct hit."
    prompts = [Prompt.user(t) for t in texts]
    t0 = time.perf_counter()
    res = api.batch(prompts, MODEL, progress=False, **params)
    dt = time.perf_counter() - t0
    assert all(r[0].cached and r[0].completion == t for r, t in zip(res, texts)), "a replayed prompt missed the cache"
    return dt


def floor(cache: DiskCache, keys, texts) -> float:
    "Seconds per raw diskcache get of an existing key + sha256 of a short string + json.loads of the stored response."
    dc, t0 = cache._dc, time.perf_counter()
    for k, t in zip(keys, texts):
        raw = dc.get(k)
        hashlib.sha256(t.encode()).hexdigest()
        json.loads(raw[:raw.index("\n")])
    return (time.perf_counter() - t0) / len(keys)


def litellm_replay(args, url, texts, tmp) -> tuple[float, int]:
    "Fill litellm's disk cache with one response per text, then time cache hits; returns (seconds per hit, hits timed)."
    litellm = client._litellm()
    litellm.cache = litellm.Cache(type="disk", disk_cache_dir=str(tmp / "litellm"))  # on for every call until reset
    store, kw = litellm.cache.cache.disk_cache, dict(model=MODEL, api_base=url, api_key=KEY, max_retries=0, caching=True)
    msgs = lambda t: [{"role": "user", "content": t}]
    sample = texts if args.litellm_sample <= 0 else random.Random(0).sample(texts, min(args.litellm_sample, len(texts)))

    async def many(batch):
        sem = asyncio.Semaphore(args.concurrency)
        async def one(m):
            async with sem: return await litellm.acompletion(messages=m, **kw)
        return await asyncio.gather(*(one(m) for m in batch))

    async def go():
        # One real call through the server gives the stored form; every entry is that reply with its own text, written
        # by litellm's own add_cache under the key its acompletion computes (~30x faster than 10,000 calls; same entries).
        t0, tmpl = time.perf_counter(), json.loads((await many([msgs("litellm template")]))[0].model_dump_json())
        for i, t in enumerate(texts):
            tmpl["id"], tmpl["choices"][0]["message"]["content"] = f"chatcmpl-bench{i}", t
            litellm.cache.add_cache(json.dumps(tmpl, separators=(",", ":")), messages=msgs(t), **kw)
        assert len(store) >= len(texts), f"litellm's disk cache holds {len(store)} of {len(texts)} entries"
        print(f"   filled litellm's disk cache with {len(texts):,} responses in {time.perf_counter() - t0:.1f} s")
        await many([msgs(texts[0])])  # warm the hit path (its first hit imports litellm's proxy modules)
        before, batch = server_requests(url), [msgs(t) for t in sample]
        t0 = time.perf_counter()
        out = await many(batch)
        dt = time.perf_counter() - t0
        assert server_requests(url) == before, "litellm replay reached the server"
        assert all(r._hidden_params.get("cache_hit") and r.choices[0].message.content == t for r, t in zip(out, sample)), \
            "a litellm replay was not a correct cache hit"
        return dt
    try: dt = asyncio.run(go())
    finally: litellm.cache = None
    return dt / len(sample), len(sample)


def bench_cached(args, url, tmp):
    params = {"api_base": url, "api_key": KEY}
    texts = [f"cached prompt {i}: tell me about the number {i}" for i in range(args.cached)]
    small = client.InferenceAPI(cache_dir=tmp / "small")
    big = client.InferenceAPI(cache_dir=tmp / "big")
    km = client._keymakers(small._targets_for(MODEL, params)[:1], params)[0]
    t0 = time.perf_counter()
    fill(small, km, texts)
    fill(big, km, texts)
    fill(big, km, [f"unrelated prompt {i}: something else entirely" for i in range(args.extra)])
    print(f"   filled caches of {len(small.cache):,} and {len(big.cache):,} entries in {time.perf_counter() - t0:.1f} s")
    for api in (small, big): replay(api, texts[:100], params)  # warm: client loop, target resolution, page cache
    times, before = {"small": [], "big": []}, server_requests(url)
    for r in range(args.reps):
        for name in (["small", "big"] if r % 2 == 0 else ["big", "small"]):
            times[name].append(replay(small if name == "small" else big, texts, params))
    assert server_requests(url) == before, "an InferenceAPI replay reached the server"
    ours_small, ours_big = statistics.median(times["small"]) / len(texts), statistics.median(times["big"]) / len(texts)
    keys = [km(Prompt.user(t).content_hash, 0) for t in texts]
    fl = min(floor(small.cache, keys, texts) for _ in range(args.reps))
    small.close(); big.close()
    theirs, timed = litellm_replay(args, url, texts, tmp)
    return ours_small, ours_big, fl, theirs, timed, times


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--requests", type=int, default=2000, help="uncached requests per path per round")
    ap.add_argument("--concurrency", type=int, default=50, help="requests in flight")
    ap.add_argument("--latency", type=float, default=0.02, help="scripted server latency for the uncached test, s")
    ap.add_argument("--rounds", type=int, default=5, help="uncached rounds (each path in a fresh process each round)")
    ap.add_argument("--cached", type=int, default=10_000, help="prompts replayed from the cache")
    ap.add_argument("--extra", type=int, default=90_000, help="unrelated entries added for the size-scaling test")
    ap.add_argument("--reps", type=int, default=7, help="cached replay trials per cache size; medians count")
    ap.add_argument("--litellm-sample", type=int, default=0, help="litellm hits to time, a random subset (0 = all)")
    ap.add_argument("--quick", action="store_true", help="small sizes for a smoke run (figures only, no verdict)")
    ap.add_argument("--child", choices=["uncached-bare", "uncached-api"], help=argparse.SUPPRESS)
    ap.add_argument("--url", help=argparse.SUPPRESS)
    ap.add_argument("--round", type=int, default=0, help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.child: return child(args)
    for k, v in (QUICK if args.quick else {}).items():  # --quick shrinks the sizes left at their defaults
        if getattr(args, k) == ap.get_default(k): setattr(args, k, v)

    start, results = time.perf_counter(), []
    print(f"1. uncached: {args.requests} distinct prompts per path per round, concurrency {args.concurrency}, server latency "
          f"{args.latency * 1000:.0f} ms (own process); each path in a fresh process, alternating, median of {args.rounds} rounds' ratios")
    with scripted_server(args.latency) as url:
        ratio = bench_uncached(args, url)
    results.append(("1 uncached wall time, InferenceAPI / bare litellm", f"{ratio:.4f}", "<= 1.10", ratio <= 1.10))
    print(f"   ratio api / bare (median of the rounds): {ratio:.4f} (target <= 1.10: {'PASS' if ratio <= 1.10 else 'FAIL'})")

    with tempfile.TemporaryDirectory(prefix="bench_client-") as d, scripted_server(0.0) as url:
        print(f"\n2. cached replay of {args.cached:,} prompts (fresh Prompt objects; median of {args.reps} replays)")
        ours, ours_big, fl, theirs, timed, times = bench_cached(args, url, Path(d))
    rate, speedup = 1 / ours, theirs / ours
    print(f"   InferenceAPI.batch         {ours * 1e6:8.1f} us/response  ({rate:8,.0f} responses/s)")
    print(f"   litellm disk cache         {theirs * 1e6:8.1f} us/response  ({1 / theirs:8,.0f} responses/s; "
          f"{'all' if timed == args.cached else f'{timed:,} random'} of {args.cached:,} hits timed"
          f"{'' if timed == args.cached else ', per hit extrapolated'}; concurrency {args.concurrency})")
    print(f"   floor (get+sha256+loads)   {fl * 1e6:8.1f} us/response  (ours / floor = {ours / fl:.1f}x, informational)")
    print(f"   speedup litellm / ours: {speedup:.1f}x (target >= 20: {'PASS' if speedup >= 20 else 'FAIL'})")
    print(f"   ours: {rate:,.0f} responses/s (target >= 10,000: {'PASS' if rate >= 10_000 else 'FAIL'})")
    results.append(("2 cached: litellm disk cache / ours per response", f"{speedup:.1f}x", ">= 20x", speedup >= 20))
    results.append(("2 cached: ours responses/s", f"{rate:,.0f}", ">= 10,000", rate >= 10_000))

    n_small, n_big = args.cached, args.cached + args.extra
    trial_ratios = [b / s for b, s in zip(times["big"], times["small"])]
    scale = statistics.median(trial_ratios)
    print(f"\n3. size scaling: the same {args.cached:,} prompts from caches of {n_small:,} and {n_big:,} entries, "
          f"alternated over {args.reps} trials, median of the per-trial ratios")
    for name, n in (("small", n_small), ("big", n_big)):
        print(f"   {n:>7,} entries: " + ", ".join(f"{t / args.cached * 1e6:.1f}" for t in times[name]) + " us/response")
    print("   per-trial ratios big / small: " + ", ".join(f"{x:.3f}" for x in trial_ratios))
    print(f"   ratio {n_big:,} / {n_small:,}: {scale:.3f} (target <= 1.5: {'PASS' if scale <= 1.5 else 'FAIL'})")
    results.append((f"3 cached lookup, {n_big:,} / {n_small:,} entries", f"{scale:.3f}", "<= 1.5", scale <= 1.5))

    print(f"\nsummary ({time.perf_counter() - start:.0f} s)")
    print(f"  {'measure':52s} {'figure':>10s}  {'target':10s} result")
    for name, fig, target, ok in results:
        print(f"  {name:52s} {fig:>10s}  {target:10s} {'PASS' if ok else 'FAIL'}")
    if args.quick:  # small sizes are dominated by fixed costs and noise: a smoke run, not a verdict
        print("  (--quick: a smoke run at small sizes; the targets are judged only at full size, so it exits 0)")
        sys.exit(0)
    sys.exit(0 if all(ok for *_, ok in results) else 1)


if __name__ == "__main__":
    main()
