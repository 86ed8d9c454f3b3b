"""research_kit.proxy.store beyond its notebook: secrets never stored, revocation across store objects, allowlists,
exact quotas under 200 concurrent requests (in one process; in two processes on one Redis; in two processes on one
SQLite file), a killed process's reservation expiring, rate limits, usage isolation, and the daily rollover."""
import asyncio
import json
import math
import os
import signal
import subprocess
import sys
import time
from datetime import datetime, timezone
from pathlib import Path

import pytest

from research_kit.proxy.store import AuthError, Forbidden, ProxyStore, QuotaExceeded, RateLimited

HERE = Path(__file__).resolve().parent


def _store(tmp_path, **kw) -> tuple[ProxyStore, str]:
    return ProxyStore.init(tmp_path / "proxy", **kw)


def test_secrets_are_shown_once_and_stored_hashed(tmp_path):
    store, admin = _store(tmp_path)
    key, secret = store.create_key("alice", quotas=["openai:daily:1000"])
    assert secret.startswith("rk-") and len(secret) > 40 and key.prefix == secret[:7]
    store.log(key, "m", "g", status=200, cached=False, prompt_tokens=1, completion_tokens=1, cost_usd=0, saved_usd=0, latency_ms=1, added_ms=1)
    store.flush()
    listed = store.keys(include_revoked=True)
    assert "hash" not in listed.columns and secret not in listed.to_json() and admin not in listed.to_json()
    for check in (False, True):  # in the WAL, then after a checkpoint moved it into the main file
        if check: store._con.execute("PRAGMA wal_checkpoint(TRUNCATE)")
        raw = b"".join(p.read_bytes() for p in (tmp_path / "proxy").iterdir())
        assert secret.encode() not in raw and admin.encode() not in raw
        assert secret[3:20].encode() not in raw  # not even a piece past the public prefix
    assert store.authenticate(secret) == key
    store.close()


def test_revocation_and_expiry_reach_another_store_within_a_second(tmp_path):
    a, _ = _store(tmp_path)
    b = ProxyStore(tmp_path / "proxy")
    key, secret = a.create_key("bob")
    soon, soon_secret = a.create_key("soon", expires=time.time() + 1.5)
    assert b.authenticate(secret).id == key.id and b.authenticate(soon_secret).id == soon.id
    a.revoke(key.id)
    t0 = time.monotonic()
    while True:
        try: b.authenticate(secret)
        except AuthError as e:
            assert "revoked" in str(e) and secret not in str(e) and e.status == 401
            break
        assert time.monotonic() - t0 < 1.0, "revocation not seen within 1 s"
        time.sleep(0.02)
    time.sleep(max(soon.expires_at - time.time(), 0) + 0.01)
    with pytest.raises(AuthError, match="expired at"): b.authenticate(soon_secret)
    with pytest.raises(AuthError, match="no such key"): b.authenticate("rk-" + "x" * 43)
    a.close(); b.close()


def test_allowlists_of_key_and_account_group(tmp_path):
    store, _ = _store(tmp_path)
    store.set_group("class", models=["group:local", "gpt-4o-mini"])
    free, _ = store.create_key("free")
    pat, _ = store.create_key("pat", models=["gpt-4o*", "claude-3-haiku"])
    student, _ = store.create_key("student", group="class", models=["gpt-4o*", "group:local"])
    for m, g in (("anything", "x"), ("gpt-4o", "openai")): store.check_model(free, m, g)
    for m, g in (("gpt-4o", "openai"), ("gpt-4o-mini", "openai"), ("claude-3-haiku", "anthropic")): store.check_model(pat, m, g)
    with pytest.raises(Forbidden, match="may not use model 'claude-3-opus'") as e: store.check_model(pat, "claude-3-opus", "anthropic")
    assert (e.value.status, e.value.code) == (403, "model_not_allowed")
    store.check_model(student, "gpt-4o-mini", "openai")
    store.check_model(student, "gemma-3-270m", "local")
    with pytest.raises(Forbidden, match="account group 'class' may not use model 'gpt-4o'"): store.check_model(student, "gpt-4o", "openai")
    store.set_group("class", models=None)  # the group opens up: the key's own list still holds
    store._checked = float("-inf")
    store.check_model(student, "gpt-4o", "openai")
    store.close()


# -- exactness: the scenario every mode runs ----------------------------------------------------------------------

TOKEN_KEYS, USD_KEYS, GROUP_KEYS = range(0, 10), range(10, 15), range(15, 20)
W_TOK, A_TOK, W_USD, A_USD = 300, 100, 0.03, 0.01  # worst case > actual
TOK_LIMIT, USD_LIMIT, GROUP_LIMIT, ATTEMPTS = 1000, 0.10, 2000, 10  # 20 keys x 10 = 200 requests a round


def _setup(store) -> list:
    store.set_group("lab", quotas=["openai:daily:2000"])
    keys = [store.create_key(f"tok{i}", quotas=["openai:daily:1000"])[0] for i in TOKEN_KEYS]
    keys += [store.create_key(f"usd{i}", quotas=["*:monthly:5000,$0.10"])[0] for i in USD_KEYS]
    keys += [store.create_key(f"lab{i}", group="lab")[0] for i in GROUP_KEYS]
    return keys


def _expected(limit, worst, actual, rounds=2) -> list[int]:
    "How many requests each round admits when a round reserves everything before anything settles."
    used, out = 0, []
    for _ in range(rounds):
        n = math.floor(round((limit - used) / worst, 9))
        out.append(n); used += n * actual
    return out


async def run_rounds(store, keys, attempts: int, barrier=lambda name: None) -> list[dict]:
    "Two rounds: every request reserves at once, then (after the barrier) all admitted ones settle. Admitted per key id."
    rounds = []
    barrier("start")
    for rnd in range(2):
        async def one(k):
            try: return k, await store.reserve(k, "gpt-4o", "openai", W_TOK, W_USD)
            except QuotaExceeded: return k, None
        got = await asyncio.gather(*[one(k) for k in keys for _ in range(attempts)])
        barrier(f"reserved{rnd}")
        await asyncio.gather(*[store.settle(r, A_TOK, A_USD) for _, r in got if r is not None])
        barrier(f"settled{rnd}")
        admitted = {}
        for k, r in got: admitted[k.id] = admitted.get(k.id, 0) + (r is not None)
        rounds.append(admitted)
    return rounds


def _check_exact(store, keys, rounds: list[dict]):
    "The admitted counts are the arithmetic's and no counter passed its limit or kept a reservation."
    for i, k in enumerate(keys):
        got = [r.get(k.id, 0) for r in rounds]
        if i in TOKEN_KEYS: assert got == _expected(TOK_LIMIT, W_TOK, A_TOK), (k.name, got)
        if i in USD_KEYS: assert got == _expected(round(USD_LIMIT * 1e9), round(W_USD * 1e9), round(A_USD * 1e9)), (k.name, got)
    lab = [sum(r.get(k.id, 0) for i, k in enumerate(keys) if i in GROUP_KEYS) for r in rounds]
    assert lab == _expected(GROUP_LIMIT, W_TOK, A_TOK), lab
    for k in keys:
        for row in store.usage_summary(k)["limits"]:
            assert row["reserved_tokens"] == 0 and row["reserved_usd"] == 0, row
            if row["tokens_limit"] is not None: assert row["tokens_used"] <= row["tokens_limit"], row
            if row["usd_limit"] is not None: assert row["usd_used"] <= row["usd_limit"] + 1e-12, row
    k0 = keys[0]
    assert [r for r in store.usage_summary(k0)["limits"] if r["scope"] == "key"][0]["tokens_used"] == sum(_expected(TOK_LIMIT, W_TOK, A_TOK)) * A_TOK


@pytest.mark.parametrize("mode", ["sqlite", "redis"])
def test_200_concurrent_requests_over_20_keys_are_exact(tmp_path, redis_url, mode):
    store, _ = _store(tmp_path, redis_url=redis_url if mode == "redis" else None)
    keys = _setup(store)
    rounds = asyncio.run(run_rounds(store, keys, ATTEMPTS))
    assert sum(rounds[0].values()) < 200  # limits did refuse
    _check_exact(store, keys, rounds)
    store.close()


_WORKER = """
import asyncio, json, sys, time
from pathlib import Path
sys.path.insert(0, {tests!r})
from test_proxy_store import run_rounds
from research_kit.proxy.store import ProxyStore
me, n, sync = int(sys.argv[1]), int(sys.argv[2]), Path(sys.argv[3])
store = ProxyStore({dir!r}, redis_url={redis!r})
keys = [store.key(i) for i in json.loads(sys.argv[4])]
def barrier(name):
    (sync / f"{{name}}.{{me}}").touch()
    deadline = time.monotonic() + 30
    while len(list(sync.glob(name + ".*"))) < n:
        if time.monotonic() > deadline: raise SystemExit(f"barrier {{name}} timed out")
        time.sleep(0.005)
print(json.dumps(asyncio.run(run_rounds(store, keys, {attempts}, barrier))))
store.close()
"""


@pytest.mark.parametrize("mode", ["redis", "sqlite"])
def test_two_processes_keep_one_quota(tmp_path, redis_url, mode):
    url = redis_url if mode == "redis" else None
    store, _ = _store(tmp_path, redis_url=url)
    keys = _setup(store)
    script = tmp_path / "worker.py"
    script.write_text(_WORKER.format(tests=str(HERE), dir=str(tmp_path / "proxy"), redis=url, attempts=ATTEMPTS // 2))
    (sync := tmp_path / "sync").mkdir()
    procs = [subprocess.Popen([sys.executable, str(script), str(i), "2", str(sync), json.dumps([k.id for k in keys])],
                              stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True) for i in range(2)]
    outs = [p.communicate(timeout=60) for p in procs]
    assert all(p.returncode == 0 for p in procs), [o[1][-2000:] for o in outs]
    per = [json.loads(o[0]) for o in outs]
    print("admitted per process, round 1:", [sum(w[0].values()) for w in per])
    rounds = [{k.id: sum(w[r].get(k.id, 0) for w in per) for k in keys} for r in range(2)]
    _check_exact(store, keys, rounds)
    store.close()


_HOLDER = """
import asyncio, sys, time
from research_kit.proxy.store import ProxyStore
store = ProxyStore({dir!r}, redis_url={redis!r}, reservation_ttl=1)
key = store.key("holder")
asyncio.run(store.reserve(key, "gpt-4o", "openai", 1000, 0.0))
print("reserved", flush=True)
time.sleep(60)
"""


@pytest.mark.parametrize("mode", ["sqlite", "redis"])
def test_a_killed_process_reservation_expires(tmp_path, redis_url, mode):
    url = redis_url if mode == "redis" else None
    store, _ = _store(tmp_path, redis_url=url)
    key, _ = store.create_key("holder", quotas=["openai:daily:1000"])
    script = tmp_path / "holder.py"
    script.write_text(_HOLDER.format(dir=str(tmp_path / "proxy"), redis=url))
    p = subprocess.Popen([sys.executable, str(script)], stdout=subprocess.PIPE, text=True)
    try: assert p.stdout.readline().strip() == "reserved"
    finally:
        p.send_signal(signal.SIGKILL); p.wait()
    with pytest.raises(QuotaExceeded, match="0 used, 1,000 reserved"): asyncio.run(store.reserve(key, "gpt-4o", "openai", 1, 0.0))
    time.sleep(1.1)  # the holder's reservation_ttl
    r = asyncio.run(store.reserve(key, "gpt-4o", "openai", 1000, 0.0))
    asyncio.run(store.settle(r, 10, 0.0))
    assert store.usage_summary(key)["limits"][0]["tokens_used"] == 10
    store.close()


@pytest.mark.parametrize("mode", ["memory", "redis"])
def test_rpm_and_max_parallel_answer_429_with_retry_after(tmp_path, redis_url, mode):
    now = [1_800_000_000.0]
    store, _ = _store(tmp_path, redis_url=redis_url if mode == "redis" else None, clock=lambda: now[0])
    key, _ = store.create_key("busy", rpm=5, max_parallel=2)

    async def go():
        a, b = await store.acquire(key), await store.acquire(key)
        with pytest.raises(RateLimited, match="2 requests in flight") as e: await store.acquire(key)
        assert (e.value.status, e.value.code, e.value.retry_after) == (429, "rate_limit_exceeded", 1.0)
        await store.release(a); await store.release(b)
        for _ in range(3):
            now[0] += 1
            await store.release(await store.acquire(key))
        now[0] += 10
        with pytest.raises(RateLimited, match="5 requests per minute") as e: await store.acquire(key)
        assert e.value.retry_after == pytest.approx(60 - 13, abs=0.01)  # the first two began 13 s ago
        now[0] += 47.01
        await store.release(await store.acquire(key))
    asyncio.run(go())
    store.close()


def test_usage_summary_holds_only_its_own_key(tmp_path):
    store, _ = _store(tmp_path)
    mine, _ = store.create_key("mine", quotas=["*:daily:100000"])
    other, _ = store.create_key("other-secret-project")
    for i in range(30):
        store.log(mine, "gpt-4o-mini", "openai", status=200, cached=i % 3 == 0, prompt_tokens=10, completion_tokens=2, cost_usd=0.001,
                  saved_usd=0, latency_ms=5, added_ms=0.5)
        store.log(other, "other-model-xyz", "private", status=500, cached=False, prompt_tokens=99, completion_tokens=9, cost_usd=0.5,
                  saved_usd=0, latency_ms=5, added_ms=0.5)
    s = store.usage_summary(mine)  # it flushes first: every row is there
    assert s["totals"]["requests"] == 30 and s["totals"]["cached"] == 10 and s["totals"]["errors"] == 0
    assert len(s["recent"]) == 30 and {r["model"] for r in s["recent"]} == {"gpt-4o-mini"}
    assert [d["requests"] for d in s["daily"]] == [30]
    text = json.dumps(s)
    assert other.id not in text and "other-model-xyz" not in text and "other-secret-project" not in text and "private" not in text
    assert set(store.usage()["key_id"]) == {mine.id, other.id}
    assert list(store.usage(other)["requests"]) == [30]
    store.close()


@pytest.mark.parametrize("mode", ["sqlite", "redis"])
def test_daily_window_rolls_over_at_utc_midnight(tmp_path, redis_url, mode):
    now = [datetime(2026, 3, 31, 23, 59, 50, tzinfo=timezone.utc).timestamp()]
    store, _ = _store(tmp_path, redis_url=redis_url if mode == "redis" else None, clock=lambda: now[0])
    key, _ = store.create_key("daily", quotas=["*:daily:100", "*:monthly:200", "*:total:$1"])

    async def go():
        await store.settle(await store.reserve(key, "m", "local", 100, 0.1), 100, 0.1)
        with pytest.raises(QuotaExceeded, match=r"key quota \*:daily:100 tokens: 100 used, 0 reserved; this request may use 1") as e:
            await store.reserve(key, "m", "local", 1, 0.0)
        assert (e.value.code, e.value.retry_after) == ("insufficient_quota", 10.0)
        now[0] += 11  # April 1st: a new day and a new month
        await store.settle(await store.reserve(key, "m", "local", 100, 0.1), 100, 0.1)
        now[0] += 86400  # April 2nd
        await store.settle(await store.reserve(key, "m", "local", 50, 0.8), 50, 0.8)
        with pytest.raises(QuotaExceeded, match=r"key quota \*:total:\$1 USD: \$1 used") as e: await store.reserve(key, "m", "local", 1, 0.01)
        assert e.value.retry_after is None
        now[0] += 86400
        with pytest.raises(QuotaExceeded, match=r"\*:monthly:200 tokens: 150 used, 0 reserved; this request may use 60") as e: await store.reserve(key, "m", "local", 60, 0.0)
        assert e.value.retry_after == pytest.approx(datetime(2026, 5, 1, tzinfo=timezone.utc).timestamp() - now[0])
    asyncio.run(go())
    rows = {r["period"]: r for r in store.usage_summary(key)["limits"]}
    assert rows["daily"]["tokens_used"] == 0 and rows["monthly"]["tokens_used"] == 150 and rows["total"]["usd_used"] == pytest.approx(1.0)
    store.close()


def test_a_flushed_redis_keeps_the_quota_from_the_ledger(tmp_path, redis_url):
    import redis
    store, _ = _store(tmp_path, redis_url=redis_url)
    key, _ = store.create_key("kept", quotas=["openai:daily:1000", "*:total:$1"])

    async def go():
        r = await store.reserve(key, "gpt-4o", "openai", 900, 0.9)
        await store.settle(r, 700, 0.7)
        store.log(key, "gpt-4o", "openai", status=200, cached=False, prompt_tokens=600, completion_tokens=100, cost_usd=0.7,
                  saved_usd=0, latency_ms=1, added_ms=1)
        store.log(key, "gpt-4o", "openai", status=200, cached=True, prompt_tokens=600, completion_tokens=100, cost_usd=0,
                  saved_usd=0.7, latency_ms=1, added_ms=1)  # a cache hit: free
        store.flush()
        redis.Redis.from_url(redis_url).flushall()
        with pytest.raises(QuotaExceeded, match="700 used, 0 reserved; this request may use 400"):
            await store.reserve(key, "gpt-4o", "openai", 400, 0.0)
        await store.reserve(key, "gpt-4o", "openai", 300, 0.3)
    asyncio.run(go())
    store.close()


def test_store_refuses_what_is_not_a_store(tmp_path):
    with pytest.raises(FileNotFoundError, match="rk proxy init --dir"): ProxyStore(tmp_path / "none")
    (tmp_path / "x").mkdir(); (tmp_path / "x" / "proxy.db").write_text("hello " * 500)
    with pytest.raises(ValueError, match="proxy.db is not a proxy store"): ProxyStore(tmp_path / "x")
    store, _ = _store(tmp_path)
    with pytest.raises(FileExistsError, match="proxy.db exists"): ProxyStore.init(tmp_path / "proxy")
    store.close()


def test_the_request_path_is_fast(tmp_path):
    "authenticate + acquire + release + log, the per-request cost of a cache hit, in microseconds."
    store, _ = _store(tmp_path)
    key, secret = store.create_key("fast", rpm=10**9, max_parallel=1000)

    async def go(n):
        for _ in range(n):
            k = store.authenticate(secret)
            lease = await store.acquire(k)
            store.log(k, "m", "local", status=200, cached=True, prompt_tokens=10, completion_tokens=5, cost_usd=0, saved_usd=1e-5,
                      latency_ms=1, added_ms=0.1)
            await store.release(lease)
    t0 = time.perf_counter()
    asyncio.run(go(5000))
    per = (time.perf_counter() - t0) / 5000
    store.flush()
    assert store.usage_summary(key)["totals"]["requests"] == 5000
    assert per < 200e-6, f"{per * 1e6:.0f} us per request"
    store.close()


@pytest.mark.parametrize("mode", ["sqlite", "redis"])
def test_tokens_per_minute_slide(tmp_path, redis_url, mode):
    now = [1_800_000_000.0]
    store, _ = _store(tmp_path, redis_url=redis_url if mode == "redis" else None, clock=lambda: now[0])
    key, _ = store.create_key("tpm", tpm=1000)

    async def go():
        await store.settle(await store.reserve(key, "m", "local", 600, 0), 400, 0)  # settles below its worst case
        now[0] += 20
        held = await store.reserve(key, "m", "local", 600, 0)  # 400 + 600: exactly the limit
        with pytest.raises(RateLimited, match="1,000 tokens per minute: 1,000 used in the last 60 s; this request may use 1") as e:
            await store.reserve(key, "m", "local", 1, 0)
        assert e.value.retry_after == pytest.approx(40)  # when the first request leaves the window
        await store.settle(held, 500, 0)
        await store.settle(await store.reserve(key, "m", "local", 100, 0), 100, 0)  # 400 + 500 + 100
        now[0] += 40.5  # the first (400) has left the window
        await store.reserve(key, "m", "local", 400, 0)
        with pytest.raises(RateLimited): await store.reserve(key, "m", "local", 1, 0)
    asyncio.run(go())
    store.close()
