"""Benchmark: the proxy's added latency beside LiteLLM's proxy at 200 concurrent clients, its cached throughput, its memory.

    .venv/bin/python tests/bench_proxy.py [--clients 200] [--requests-per-client 25] [--litellm-venv PATH] [--quick]

Every server is its own process on 127.0.0.1: the upstream (`python -m research_kit.testing --reply echo`, the
scripted OpenAI-compatible server, no latency), the proxy under test, and the load generator (aiohttp, `--clients`
coroutines, each with its own keep-alive connection, closed loop: the next request leaves when the last answer is
read). By default the proxy is pinned to CPU 0 and the upstream and the load generator to CPU 1 (`--no-pin` to let
the OS place them), so both proxies get one core and the same neighbours.
1. Added latency: the same load straight to the upstream (measured at the start and at the end), through LiteLLM's
   proxy (`litellm[proxy]` in a side venv, made with `python -m venv` + pip when missing; config.yaml, a master key,
   no database, its in-memory response cache `cache: true, cache_params: {type: local}`) and through ours
   (`rk proxy serve`, a user key). Cached = the same 20 prompts, each sent once before; uncached = a unique prompt per
   request. Added (uncached) = proxy end-to-end minus direct end-to-end at the same percentile; added (cached) = the
   whole end-to-end time, as a hit calls no upstream. The time each proxy reports in its own header (ours
   `x-rk-added-ms`, LiteLLM's `x-litellm-overhead-duration-ms`) is printed beside it, and each proxy's CPU time per
   request (all threads, and its event-loop thread alone). Target: our p50 at most half of LiteLLM's, cached and uncached.
2. Throughput: cached responses/s from one proxy process (ours), from the cached run of 1. Target: >= 1,000/s.
3. Memory: the RSS of our proxy process after a warm-up of 2,000 requests and after 20,000 more (3 in 4 cached, 1 in
   4 unique). Target: growth under 10%.
Every answer is checked (status 200, the echoed text, the cache flag); cached runs must not reach the upstream.
`--profile` runs ours under cProfile (its event-loop thread and research_kit's loop thread) and prints where the time
goes per request; `--skip-litellm` / `--skip-ours` measure one side.
Exits 1 when a target is missed, 2 when LiteLLM's proxy could not run (not with --quick: a smoke run, exits 0).
"""
import argparse
import asyncio
import contextlib
import json
import os
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import threading
import time
import urllib.request
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
LITELLM_PIN = "litellm[proxy]==1.106.2"
MODEL, N_CACHED = "scripted", 20
QUICK = dict(clients=100, requests_per_client=2, litellm_requests_per_client=1, memory_requests=1_000, memory_warmup=200)
OFFLINE_ENV = {"LITELLM_LOCAL_MODEL_COST_MAP": "True",  # else litellm fetches its price table from GitHub on import
               "LITELLM_MODE": "PRODUCTION"}  # else it loads a .env from the cwd
# (litellm 1.106.2 has no telemetry left to disable: `--telemetry` is a no-op; under strace its proxy connects only to
# the upstream, from start to stop, with these two set.)


# cProfile inside the proxy process with --profile, in its two busy threads: uvicorn's loop (the main thread) and
# research_kit's loop (InferenceAPI's upstream calls). SIGUSR1 starts both; SIGUSR2 stops them and writes
# $BENCH_PROFILE_OUT.<k>.main.prof and .rk.prof.
PROFILER = r"""
import cProfile, os, signal, threading
_P = {"k": 0}
def _rk_loop():
    try:
        from research_kit.basics import event_loop
        return event_loop()
    except Exception: return None
def _on(*a):
    _P["main"] = cProfile.Profile(); _P["rk"] = cProfile.Profile(); _P["main"].enable()
    if (loop := _rk_loop()) is not None: loop.call_soon_threadsafe(_P["rk"].enable)
def _off(*a):
    _P["main"].disable(); _P["k"] += 1
    base = f"{os.environ['BENCH_PROFILE_OUT']}.{_P['k']}"
    done = threading.Event()
    def stop_rk():
        _P["rk"].disable(); _P["rk"].dump_stats(base + ".rk.prof"); done.set()
    if (loop := _rk_loop()) is not None: loop.call_soon_threadsafe(stop_rk); done.wait(10)
    _P["main"].dump_stats(base + ".main.prof")
signal.signal(signal.SIGUSR1, _on); signal.signal(signal.SIGUSR2, _off)
"""


def cached_text(k: int) -> str: return f"bench cached prompt {k}: what is {k} plus one?"


def body(text: str) -> bytes:
    return json.dumps({"model": MODEL, "messages": [{"role": "user", "content": text}], "max_tokens": 16,
                       "temperature": 0}).encode()


# ---- the load generator (a child process) ---------------------------------------------------------------------------

def load_child(args):
    "Run --clients closed-loop clients of --n requests each against --url; print one JSON line of per-request figures."
    import aiohttp
    import orjson
    try:
        import uvloop; uvloop.install()
    except ImportError: pass
    key = os.environ.get("BENCH_KEY")  # not on the command line, where `ps` would show it
    hdr = {"content-type": "application/json", **({"authorization": f"Bearer {key}"} if key else {})}
    url = args.url.rstrip("/") + "/chat/completions"

    def text(c: int, j: int, phase: str) -> str:
        if args.mode == "cached" or (args.mode == "mixed" and (c + j) % 4 != 3): return cached_text((c + j) % N_CACHED)
        return f"bench {args.tag} {phase} client {c} request {j}: say this back"

    lat, added, bad, hits = [], [], [], 0

    async def one(session, t: str, record: bool):
        nonlocal hits
        t0 = time.perf_counter()
        async with session.post(url, data=body(t), headers=hdr) as r:
            raw = await r.read()
            h = r.headers
        dt = (time.perf_counter() - t0) * 1000
        ok = r.status == 200
        if ok:
            try: ok = orjson.loads(raw)["choices"][0]["message"]["content"] == t
            except Exception: ok = False
        if not ok and len(bad) < 5: bad.append(f"{r.status}: {raw[:300]!r}")
        if not record: return
        lat.append(dt)
        a = h.get("x-rk-added-ms") or h.get("x-litellm-overhead-duration-ms")
        if a is not None: added.append(float(a))
        if h.get("x-rk-cached", "").lower() == "true" or "x-litellm-cache-key" in h: hits += 1
        if not ok: bad.append(None)

    async def client(c: int, go: asyncio.Event, ready: list):
        async with aiohttp.ClientSession(connector=aiohttp.TCPConnector(limit=1), timeout=aiohttp.ClientTimeout(total=120)) as s:
            for j in range(args.warmup): await one(s, text(c, j, "warm"), False)
            ready.append(c)
            await go.wait()
            for j in range(args.n): await one(s, text(c, j, "timed"), True)
        return time.perf_counter()

    async def main():
        go, ready = asyncio.Event(), []
        tasks = [asyncio.create_task(client(c, go, ready)) for c in range(args.clients)]
        while len(ready) < args.clients:
            await asyncio.sleep(0.01)
            if any(t.done() for t in tasks): break  # a client failed in its warm-up: gather raises below
        t0 = time.perf_counter(); go.set()
        ends = await asyncio.gather(*tasks)
        return max(ends) - t0
    wall = asyncio.run(main())
    print(json.dumps({"lat_ms": lat, "added_ms": added, "hits": hits, "errors": sum(1 for b in bad if b is None),
                      "error_samples": [b for b in bad if b][:5], "wall_s": wall}))


# ---- processes ------------------------------------------------------------------------------------------------------

def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0)); return s.getsockname()[1]


class Procs:
    "Every subprocess this benchmark starts, killed (with its children) at the end whatever happens."
    def __init__(self, pin: bool):
        self.procs, self.pin = [], pin and hasattr(os, "sched_setaffinity") and (os.cpu_count() or 1) >= 2

    def start(self, cmd, cpu: int | None, log: Path | None = None, **kw) -> subprocess.Popen:
        out = open(log, "wb") if log else subprocess.PIPE
        p = subprocess.Popen(cmd, stdout=out, stderr=subprocess.STDOUT if log else None, start_new_session=True, **kw)
        self.procs.append(p)
        # pinned at once, before its interpreter has started any thread (threads inherit it); no preexec_fn, which is
        # unsafe while this process runs threads of its own
        if self.pin and cpu is not None:
            with contextlib.suppress(ProcessLookupError): os.sched_setaffinity(p.pid, {cpu})
        return p

    def stop(self, p: subprocess.Popen):
        import psutil
        with contextlib.suppress(psutil.Error):
            kids = psutil.Process(p.pid).children(recursive=True)
            for k in kids: k.kill()
        p.kill(); p.wait()
        if p.stdout: p.stdout.close()

    def close(self):
        for p in self.procs:
            if p.poll() is None: self.stop(p)


def wait_ready(p: subprocess.Popen, url: str, log: Path, headers: dict | None = None, timeout: float = 180) -> float:
    "Seconds until GET url answers 200; RuntimeError with the log's tail when the process dies or never answers."
    t0 = time.perf_counter()
    while time.perf_counter() - t0 < timeout:
        if p.poll() is not None:
            raise RuntimeError(f"{p.args[:4]} exited with {p.returncode} while starting; its log ends:\n{tail(log)}")
        with contextlib.suppress(OSError):
            with urllib.request.urlopen(urllib.request.Request(url, headers=headers or {}), timeout=2) as r:
                if r.status == 200: return time.perf_counter() - t0
        time.sleep(0.25)
    raise RuntimeError(f"{url} did not answer within {timeout:.0f} s; the log ends:\n{tail(log)}")


def tail(log: Path, n: int = 3000) -> str:
    try: return log.read_text(errors="replace")[-n:]
    except OSError: return "(no log)"


def upstream_requests(url: str) -> int:
    with urllib.request.urlopen(url.removesuffix("/v1") + "/_stats") as r: return json.load(r)["requests"]


def post(url: str, key: str | None, text: str) -> tuple[int, dict]:
    req = urllib.request.Request(url.rstrip("/") + "/chat/completions", data=body(text), method="POST",
                                 headers={"content-type": "application/json", **({"authorization": f"Bearer {key}"} if key else {})})
    with urllib.request.urlopen(req, timeout=60) as r: return r.status, {k.lower(): v for k, v in r.headers.items()}


def rss_mb(pid: int) -> float:
    "Resident memory of pid and all its children, MB."
    import psutil
    p = psutil.Process(pid)
    return sum(q.memory_info().rss for q in [p, *p.children(recursive=True)]) / 2**20


def cpu_s(pid: int) -> tuple[float, float]:
    "CPU seconds (user + system) of pid and its live children, and of pid's main thread alone (the server's event loop)."
    import psutil
    p = psutil.Process(pid)
    main = sum((t.user_time + t.system_time) for t in p.threads() if t.id == pid)
    return sum(sum(q.cpu_times()[:2]) for q in [p, *p.children(recursive=True)]), main


# ---- LiteLLM's proxy --------------------------------------------------------------------------------------------------

def default_litellm_venv() -> Path:
    try:
        from research_kit.basics import user_dir
        return user_dir("RESEARCH_KIT_LITELLM_PROXY_VENV", "litellm-proxy-venv")
    except ImportError: return Path("~/.cache/research_kit/litellm-proxy-venv").expanduser()


def litellm_version(venv: Path) -> str | None:
    py, exe = venv / "bin" / "python", venv / "bin" / "litellm"
    if not (py.exists() and exe.exists()): return None
    r = subprocess.run([py, "-c", "import importlib.metadata as m, fastapi, uvicorn; print(m.version('litellm'))"],
                       capture_output=True, text=True, env={**os.environ, **OFFLINE_ENV})
    return r.stdout.strip() if r.returncode == 0 else None


def ensure_litellm_venv(venv: Path) -> str | None:
    "The litellm version in venv, creating the venv with `python -m venv` + pip when missing; None (said why) if impossible."
    if (v := litellm_version(venv)): return v
    print(f"   LiteLLM's proxy is not installed in {venv}: creating it (python -m venv, pip install '{LITELLM_PIN}'; minutes)",
          flush=True)
    for cmd in ([sys.executable, "-m", "venv", str(venv)], [str(venv / "bin" / "python"), "-m", "pip", "install", "-q", LITELLM_PIN]):
        r = subprocess.run(cmd, capture_output=True, text=True)
        if r.returncode:
            print(f"   CANNOT install LiteLLM's proxy: `{' '.join(cmd)}` failed ({r.returncode}):\n"
                  + "\n".join("     " + line for line in (r.stderr or r.stdout).strip().splitlines()[-8:])
                  + f"\n   Install it by hand (python -m venv {venv} && {venv}/bin/pip install '{LITELLM_PIN}') or pass "
                    "--litellm-venv PATH / --skip-litellm.")
            return None
    if (v := litellm_version(venv)): return v
    print(f"   CANNOT use LiteLLM's proxy: {venv}/bin/litellm is missing or does not import after pip install.")
    return None


def litellm_config(upstream: str, master_key: str) -> str:
    return f"""model_list:
  - model_name: {MODEL}
    litellm_params:
      model: openai/scripted
      api_base: {upstream}
      api_key: sk-bench-dummy-upstream-key
      input_cost_per_token: 0.000001
      output_cost_per_token: 0.000002
litellm_settings:
  cache: true
  cache_params:
    type: local
general_settings:
  master_key: {master_key}
"""


def start_litellm(procs: Procs, venv: Path, upstream: str, tmp: Path):
    "Start LiteLLM's proxy (no database, in-memory cache); returns (process, base URL, key, startup s)."
    d = tmp / "litellm"; d.mkdir()
    key, port = "sk-bench-litellm-master", free_port()
    (d / "config.yaml").write_text(litellm_config(upstream, key))
    env = {k: v for k, v in os.environ.items() if k not in ("DATABASE_URL", "REDIS_HOST", "REDIS_URL", "OPENAI_API_KEY")}
    p = procs.start([str(venv / "bin" / "litellm"), "--config", str(d / "config.yaml"), "--host", "127.0.0.1",
                     "--port", str(port), "--num_workers", "1"], cpu=0, log=d / "log.txt", cwd=d,
                    env={**env, **OFFLINE_ENV})
    base = f"http://127.0.0.1:{port}"
    s = wait_ready(p, base + "/health/liveliness", d / "log.txt")
    return p, base + "/v1", key, s


# ---- ours -------------------------------------------------------------------------------------------------------------

def start_ours(procs: Procs, upstream: str, tmp: Path, profile: Path | None = None):
    "init_proxy + a user key, then `rk proxy serve` in its own process; returns (process, base URL, key, startup s, how)."
    from research_kit.proxy.app import init_proxy
    from research_kit.proxy.store import ProxyStore
    d = tmp / "ours"
    init_proxy(d, models={MODEL: {"model": "openai/scripted", "api_base": upstream, "group": "test",
                                  "input_cost_per_token": 1e-6, "output_cost_per_token": 2e-6, "max_tokens": 64}})
    store = ProxyStore(d)
    _, key = store.create_key("bench")
    with contextlib.suppress(Exception): store.close()
    port = free_port()
    env = {**os.environ, **OFFLINE_ENV, "OPENAI_API_KEY": "sk-bench-dummy-upstream-key",
           "RESEARCH_KIT_CACHE_DIR": str(tmp / "ours-cache"), "BENCH_PROFILE_OUT": str(profile)}
    base, auth = f"http://127.0.0.1:{port}", {"authorization": f"Bearer {key}"}
    rk = Path(sys.executable).with_name("rk")  # the console script; `python -m research_kit.cli` has no __main__
    cli = ([str(rk)] if rk.exists() else [sys.executable, "-c", "import sys; from research_kit.cli import main; sys.exit(main())"]) \
        + ["proxy", "serve", "--dir", str(d), "--port", str(port)]
    code = (PROFILER if profile else "") + f"\nfrom research_kit.proxy.app import serve; serve({str(d)!r}, port={port})"
    ways = [("rk proxy serve", cli)] if not profile else []
    for how, cmd in ways + [("research_kit.proxy.app.serve" + (" under cProfile" if profile else ""), [sys.executable, "-c", code])]:
        log = tmp / f"ours-{len(procs.procs)}.log"
        p = procs.start(cmd, cpu=0, log=log, cwd=ROOT, env=env)
        try: return p, base + "/v1", key, wait_ready(p, base + "/v1/models", log, auth), how
        except RuntimeError as e:
            procs.stop(p)
            if how != "rk proxy serve": raise
            print(f"   (`rk proxy serve` did not start ({str(e).splitlines()[0].split(' while')[0].split('] ')[-1]}); "
                  "using research_kit.proxy.app.serve)")


# ---- measuring --------------------------------------------------------------------------------------------------------

def pct(xs: list[float], q: float) -> float:
    xs = sorted(xs)
    return xs[min(len(xs) - 1, round(q * (len(xs) - 1)))] if xs else float("nan")


def run_load(procs: Procs, url: str, key: str | None, mode: str, clients: int, n: int, tag: str,
             warmup: int = 1, server_pid: int | None = None) -> dict:
    "One load-generator process; returns its figures plus the server's CPU seconds over the run."
    cmd = [sys.executable, __file__, "--child", "--url", url, "--mode", mode, "--clients", str(clients),
           "--n", str(n), "--tag", tag, "--warmup", str(warmup)]
    c0 = cpu_s(server_pid) if server_pid else None
    p = procs.start(cmd, cpu=1, cwd=ROOT, env={**os.environ, "BENCH_KEY": key or ""})
    out, _ = p.communicate()
    if p.returncode: raise RuntimeError(f"the load generator failed ({p.returncode}) against {url}")
    res = json.loads(out.strip().splitlines()[-1])
    if server_pid:  # the server's CPU over the whole child run, warm-up included: per request over all it served
        c1, served = cpu_s(server_pid), clients * (n + warmup)
        res["cpu_us"], res["loop_us"] = ((c1[i] - c0[i]) / served * 1e6 for i in (0, 1))
    res["n"], res["rate"] = len(res["lat_ms"]), len(res["lat_ms"]) / res["wall_s"]
    if res["errors"] or res["error_samples"]:
        raise RuntimeError(f"{res['errors']} bad answers from {url} ({mode}); e.g. {res['error_samples'][:2]}")
    return res


def added(r: dict, q: float, direct: dict | None) -> float:
    "Added ms at quantile q: end-to-end minus direct (uncached); a cache hit calls no upstream, so all of it (direct None)."
    return pct(r["lat_ms"], q) - (direct[f"p{round(q * 100)}"] if direct else 0.0)


def fmt_row(name: str, r: dict, direct: dict | None, proxied: bool = True) -> str:
    p50, p99, mean = pct(r["lat_ms"], .5), pct(r["lat_ms"], .99), statistics.fmean(r["lat_ms"])
    add = f"{added(r, .5, direct):8.1f} {added(r, .99, direct):8.1f}" if proxied else f"{'':8s} {'':8s}"
    hdr = (f"{pct(r['added_ms'], .5):8.1f} {pct(r['added_ms'], .99):8.1f}" if r.get("added_ms") else f"{'-':>8s} {'-':>8s}")
    cpu = f"{r['cpu_us']:7.0f} {r['loop_us']:7.0f}" if r.get("cpu_us") is not None else f"{'-':>7s} {'-':>7s}"
    return f"  {name:18s} {p50:8.1f} {p99:8.1f} {mean:8.1f} | {add} | {hdr} | {r['rate']:7,.0f} | {cpu}"


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--clients", type=int, default=200, help="concurrent clients, one keep-alive connection each")
    ap.add_argument("--requests-per-client", type=int, default=25, help="timed requests per client per run")
    ap.add_argument("--litellm-requests-per-client", type=int, default=10,
                    help="the same for LiteLLM's proxy (~30-60 responses/s here: fewer keep the run short)")
    ap.add_argument("--memory-requests", type=int, default=20_000, help="requests through ours for the memory figure")
    ap.add_argument("--memory-warmup", type=int, default=2_000, help="requests before the first RSS reading")
    ap.add_argument("--litellm-venv", type=Path, default=None, help="venv with litellm[proxy] (made when missing; "
                    "default: $RESEARCH_KIT_LITELLM_PROXY_VENV, else litellm-proxy-venv under research_kit's user cache dir)")
    ap.add_argument("--skip-litellm", action="store_true", help="measure ours only")
    ap.add_argument("--skip-ours", action="store_true", help="measure LiteLLM's proxy and the upstream only")
    ap.add_argument("--no-pin", action="store_true", help="do not pin the proxy to CPU 0 and the rest to CPU 1")
    ap.add_argument("--profile", action="store_true", help="sample ours' stacks during its cached and uncached runs "
                    "and print where the time goes (the sampler slows it: figures then are not the verdict's)")
    ap.add_argument("--profile-dir", type=Path, help="with --profile: keep the .prof files here (for pstats/snakeviz)")
    ap.add_argument("--quick", action="store_true", help="small sizes for a smoke run (< 60 s; figures only, no verdict)")
    ap.add_argument("--child", action="store_true", help=argparse.SUPPRESS)
    for a in ("--url", "--mode", "--tag"): ap.add_argument(a, help=argparse.SUPPRESS)
    ap.add_argument("--n", type=int, help=argparse.SUPPRESS)
    ap.add_argument("--warmup", type=int, default=1, help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.child: return load_child(args)
    for k, v in (QUICK if args.quick else {}).items():  # --quick shrinks the sizes left at their defaults
        if getattr(args, k) == ap.get_default(k): setattr(args, k, v)
    import psutil  # noqa: F401  (fail early: RSS and CPU readings need it)

    start, C, N = time.perf_counter(), args.clients, args.requests_per_client
    procs = Procs(not args.no_pin)
    results, notes, venv, ver = [], [], None, None
    if not args.skip_litellm:  # before anything is timed: creating the venv takes minutes of CPU
        venv = args.litellm_venv or default_litellm_venv()
        ver = ensure_litellm_venv(venv)
        if not ver: notes.append("LiteLLM's proxy could not be installed: no comparison")
    try:
        with tempfile.TemporaryDirectory(prefix="bench_proxy-") as d:
            tmp = Path(d)
            up = procs.start([sys.executable, "-m", "research_kit.testing", "--reply", "echo"], cpu=1, cwd=ROOT, text=True)
            upstream = up.stdout.readline().strip()
            if not upstream.startswith("http"): raise RuntimeError(f"the scripted server did not start (printed {upstream!r})")
            cpus = ("proxy on CPU 0; upstream and load generator on CPU 1" if procs.pin else "no pinning: the OS shares both CPUs")
            print(f"{C} clients x {N} timed requests per run ({args.litellm_requests_per_client} through LiteLLM; +1 "
                  f"untimed warm-up each), upstream {upstream} (scripted, echo, 0 ms);"
                  f" {os.cpu_count()} CPUs, {cpus}; load average {os.getloadavg()[0]:.2f} at the start")

            print("\n1. direct to the upstream (the baseline), unique prompts", flush=True)
            direct0 = run_load(procs, upstream, None, "uncached", C, N, "direct0")

            lite = None
            if ver:
                print(f"\n2. LiteLLM's proxy from {venv}", flush=True)
                if ver != LITELLM_PIN.split("==")[1]: print(f"   (litellm {ver} there, not the pinned {LITELLM_PIN})")
                try:
                    p, url, key, s = start_litellm(procs, venv, upstream, tmp)
                    print(f"   litellm {ver} up in {s:.1f} s: config.yaml with one model ({MODEL} -> openai/scripted at the "
                          "upstream), master key, no database, in-memory response cache (cache: true, type: local), "
                          "1 worker process, its default logging", flush=True)
                    lite = measure_proxy(procs, "LiteLLM", p, url, key, upstream, C, args.litellm_requests_per_client, "litellm")
                    lite["rss_mb"] = rss_mb(p.pid)
                    procs.stop(p)
                except RuntimeError as e:
                    print(f"   CANNOT run LiteLLM's proxy: {e}")
                    notes.append("LiteLLM's proxy did not run: no comparison")

            ours = None
            if not args.skip_ours:
                print("\n3. ours", flush=True)
                prof = (args.profile_dir or tmp) / "profile"
                prof.parent.mkdir(parents=True, exist_ok=True)
                p, url, key, s, how = start_ours(procs, upstream, tmp, prof if args.profile else None)
                print(f"   up in {s:.1f} s via {how}: one model ({MODEL} -> openai/scripted at the upstream), a user key")
                ours = measure_proxy(procs, "ours", p, url, key, upstream, C, N, "ours", prof if args.profile else None)
                ours["memory"] = measure_memory(procs, p, url, key, C, args.memory_warmup, args.memory_requests)
                procs.stop(p)

            print("\n4. direct to the upstream again", flush=True)
            direct1 = run_load(procs, upstream, None, "uncached", C, N, "direct1")
    finally:
        procs.close()

    d0 = {"p50": pct(direct0["lat_ms"], .5), "p99": pct(direct0["lat_ms"], .99)}
    d1 = {"p50": pct(direct1["lat_ms"], .5), "p99": pct(direct1["lat_ms"], .99)}
    direct = {k: (d0[k] + d1[k]) / 2 for k in d0}
    print(f"\nlatency at {C} concurrent clients, ms. added: uncached = end-to-end minus direct at the same percentile "
          f"(direct = the mean of the two direct runs); cached = end-to-end (a hit calls no upstream: all of it is the "
          f"proxy's). hdr = what the proxy itself reports per response (ours x-rk-added-ms, LiteLLM's "
          f"x-litellm-overhead-duration-ms).")
    print(f"  {'':18s} {'e2e p50':>8s} {'p99':>8s} {'mean':>8s} | {'added50':>8s} {'added99':>8s} | {'hdr p50':>8s} "
          f"{'hdr p99':>8s} | {'resp/s':>7s} | {'cpu us':>7s} {'loop us':>7s}")
    print(fmt_row("direct (start)", direct0, None, proxied=False))
    print(fmt_row("direct (end)", direct1, None, proxied=False))
    for name, r in (("LiteLLM", lite), ("ours", ours)):
        if r is None: continue
        for mode in ("cached", "uncached"): print(fmt_row(f"{name} {mode}", r[mode], direct if mode == "uncached" else None))
    print("  resp/s = timed responses / wall time; cpu us = the proxy process's CPU time per request it served (warm-up "
          "included), loop us = the part of it in its main thread (the uvicorn event loop), the rest in its other threads.")
    print(f"  Closed loop: each client waits for its answer, so at {C} clients latency ~ {C} / throughput and the queue in "
          "front of the proxy is most of it;\n  the headers count only the time after the proxy's own clock starts "
          "(LiteLLM's after its auth and routing), hence smaller and not comparable between the two.")

    for mode in ("cached", "uncached"):
        if lite and ours:
            dm = direct if mode == "uncached" else None
            o, t = added(ours[mode], .5, dm), added(lite[mode], .5, dm)
            ho, ht = pct(ours[mode]["added_ms"], .5), pct(lite[mode]["added_ms"], .5)
            ok = o <= t / 2
            print(f"  {mode}: added p50 ours {o:.1f} ms vs LiteLLM {t:.1f} ms: ratio {o / t:.3f} (target <= 0.5: "
                  f"{'PASS' if ok else 'FAIL'}); by the headers {ho:.1f} vs {ht:.1f} ms, ratio {ho / ht:.3f}")
            results.append((f"1 {mode}: added p50, ours / LiteLLM", f"{o / t:.3f}", "<= 0.5", ok))
        elif ours: results.append((f"1 {mode}: added p50, ours / LiteLLM", "n/a", "<= 0.5", None))
    if ours:
        rate, cpu = ours["cached"]["rate"], ours["cached"]["cpu_us"]
        print(f"\nthroughput of one proxy process (ours), cached: {rate:,.0f} responses/s measured; its CPU time per "
              f"response, {cpu:.0f} us, allows {1e6 / cpu:,.0f}/s on a core of its own (informational)")
        results.append(("2 cached responses/s, one proxy process", f"{rate:,.0f}", ">= 1,000", rate >= 1000))
        m = ours["memory"]
        print(f"\nmemory of our proxy: RSS {m['rss0']:.1f} MB after {m['warmup']:,} requests, {m['rss1']:.1f} MB after "
              f"{m['requests']:,} more (3 in 4 cached, 1 in 4 unique; peak {m['peak']:.1f} MB, {m['rate']:,.0f} responses/s); "
              f"growth {m['growth']:+.1f}%")
        results.append((f"3 RSS growth over {m['requests']:,} requests", f"{m['growth']:+.1f}%", "< 10%", m["growth"] < 10))
    if lite: print(f"LiteLLM's proxy RSS after its runs: {lite['rss_mb']:.1f} MB" + (f"; ours after its runs: "
                   f"{ours['rss_end']:.1f} MB" if ours else ""))

    if ours and args.profile:
        for mode in ("cached", "uncached"): print_profile(mode, ours[f"profile_{mode}"], C * (N + 1))
    print(f"\nsummary ({time.perf_counter() - start:.0f} s; load average {os.getloadavg()[0]:.2f} at the end)")
    print(f"  {'measure':44s} {'figure':>10s}  {'target':10s} result")
    for name, fig, target, ok in results:
        print(f"  {name:44s} {fig:>10s}  {target:10s} {'n/a' if ok is None else 'PASS' if ok else 'FAIL'}")
    for n in notes: print(f"  note: {n}")
    if args.profile: print("  (--profile: ours ran under cProfile, which slows it; no verdict, exits 0)")
    if args.quick or args.profile:
        if args.quick: print("  (--quick: a smoke run at small sizes; the targets are judged only at full size, so it exits 0)")
        sys.exit(0)
    if any(ok is False for *_, ok in results): sys.exit(1)
    sys.exit(2 if (not args.skip_litellm and lite is None) else 0)


def measure_proxy(procs, name, p, url, key, upstream, C, N, tag, profile: Path | None = None) -> dict:
    "Cached then uncached runs through one proxy; every cached answer must be a hit that never reached the upstream."
    for k in range(N_CACHED): post(url, key, cached_text(k))  # fill its cache: each of the few prompts once
    status, h = post(url, key, cached_text(0))
    hit = h.get("x-rk-cached", "").lower() == "true" or "x-litellm-cache-key" in h
    if not hit: print(f"   WARNING: {name}'s second identical request was not reported as a cache hit")
    out = {}
    for mode in ("cached", "uncached"):
        before = upstream_requests(upstream)
        if profile: os.kill(p.pid, signal.SIGUSR1)
        r = out[mode] = run_load(procs, url, key, mode, C, N, f"{tag}-{mode}", server_pid=p.pid)
        if profile: out[f"profile_{mode}"] = read_profile(p, url, key, profile, 1 + (mode == "uncached"))
        reached = upstream_requests(upstream) - before
        print(f"   {mode:8s}: {r['n']:,} timed requests in {r['wall_s']:.1f} s ({r['rate']:,.0f}/s), p50 "
              f"{pct(r['lat_ms'], .5):.1f} ms, p99 {pct(r['lat_ms'], .99):.1f} ms; {r['hits']:,} reported cached; "
              f"{reached:,} reached the upstream", flush=True)
        if mode == "cached" and (reached or r["hits"] != r["n"]):
            raise RuntimeError(f"{name}: {reached} cached requests reached the upstream, {r['hits']} of {r['n']} hits")
    out["rss_end"] = rss_mb(p.pid)
    return out


def read_profile(p, url: str, key: str, base: Path, k: int) -> dict:
    "Stop the profiler (SIGUSR2) and read its files; a request wakes the server's loop so the signal is handled."
    os.kill(p.pid, signal.SIGUSR2)
    f = Path(f"{base}.{k}.main.prof")
    for _ in range(50):
        if f.exists():
            time.sleep(0.2)
            import pstats  # read now: the files go with the temporary folder
            return {t: pstats.Stats(str(x)) for t in ("main", "rk") if (x := Path(f"{base}.{k}.{t}.prof")).exists()}
        with contextlib.suppress(OSError): post(url, key, cached_text(0))
        time.sleep(0.1)
    raise RuntimeError(f"the profiler in the proxy process wrote no {f}")


def print_profile(name: str, files: dict, n_requests: int, top: int = 14):
    "The functions with the most own time (tottime) in each profiled thread, per request."
    for thread, st in files.items():
        idle = lambda k: "select.epoll" in k[2] or "uvloop.loop.Loop" in k[2] and "run" in k[2]  # waiting, not working
        rows = sorted(((k, v) for k, v in st.stats.items() if not idle(k)), key=lambda kv: -kv[1][2])
        total = sum(v[2] for _, v in rows)
        if total * 1e6 / n_requests < 50: continue  # a thread with nothing to do in this run
        print(f"\n  ours, {name}: {'uvicorn loop (main thread)' if thread == 'main' else 'research_kit loop thread'}, "
              f"{total * 1e6 / n_requests:,.0f} us per request outside the poller (wall time under cProfile, which inflates "
              "it; a call that releases the GIL is charged the wait to get it back); own time by function:")
        for (file, line, fn), (cc, nc, tt, ct, _) in rows[:top]:
            where = f"{file.split('site-packages/')[-1].replace(str(ROOT) + '/', '')}:{line}({fn})"
            print(f"    {tt / total * 100:5.1f}%  {tt * 1e6 / n_requests:7.1f} us/req  {where}")
        cum = sorted(((k, v) for k, v in st.stats.items() if str(ROOT / "research_kit") in k[0] or k[0].endswith("litellm/main.py")),
                     key=lambda kv: -kv[1][3])
        print("    cumulative (research_kit's functions, litellm.acompletion):")
        for (file, line, fn), (cc, nc, tt, ct, _) in cum[:10]:
            print(f"    {ct / total * 100:5.1f}%  {ct * 1e6 / n_requests:7.1f} us/req  "
                  f"{file.split('site-packages/')[-1].replace(str(ROOT) + '/', '')}:{line}({fn})")


def measure_memory(procs, p, url, key, C, warmup, n) -> dict:
    "RSS after `warmup` requests and after `n` more (3 in 4 cached, 1 in 4 unique), sampled every 0.2 s for the peak."
    run_load(procs, url, key, "mixed", C, max(1, warmup // C), "mem-warm", warmup=0)
    rss0, peak, stop = rss_mb(p.pid), [0.0], threading.Event()
    def sample():
        while not stop.wait(0.2): peak[0] = max(peak[0], rss_mb(p.pid))
    t = threading.Thread(target=sample, daemon=True); t.start()
    try: r = run_load(procs, url, key, "mixed", C, max(1, n // C), "mem", warmup=0)
    finally: stop.set(); t.join()
    rss1 = rss_mb(p.pid)
    print(f"   memory: {max(1, warmup // C) * C:,} warm-up + {r['n']:,} mixed requests ({r['rate']:,.0f}/s): RSS "
          f"{rss0:.1f} -> {rss1:.1f} MB", flush=True)
    return {"rss0": rss0, "rss1": rss1, "peak": max(peak[0], rss1), "growth": (rss1 / rss0 - 1) * 100,
            "warmup": max(1, warmup // C) * C, "requests": r["n"], "rate": r["rate"]}


if __name__ == "__main__":
    main()
