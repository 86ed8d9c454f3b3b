"""The proxy under concurrent load, as separate `rk proxy serve` processes: 200 clients over 20 keys with token
quotas and USD budgets, on one process (SQLite counters) and on two processes sharing one Redis. Limits are never
passed, nothing stays reserved, each key sees only its own requests, and the Redis pair shares one cache.
"""
import asyncio
import os
import socket
import subprocess
import time

import httpx
import pytest

from research_kit.proxy.app import init_proxy
from research_kit.proxy.store import ProxyStore
from research_kit.testing import ScriptedServer

KEYS, CLIENTS_PER_KEY, REQUESTS_PER_CLIENT, MAX_TOKENS = 20, 10, 3, 16
TOKENS, BUDGET = 300, 4.5e-4
PRICE_IN, PRICE_OUT = 1e-6, 2e-6


def _port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _serve(rk, d, redis_url=None):
    port = _port()
    args = [rk.path, "proxy", "serve", "--dir", str(d), "--port", str(port)] + (["--redis-url", redis_url] if redis_url else [])
    p = subprocess.Popen(args, stdin=subprocess.DEVNULL, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    url = f"http://127.0.0.1:{port}"
    for _ in range(300):
        try:
            if httpx.get(url + "/v1/models", timeout=1).status_code == 401: return p, url
        except httpx.TransportError: pass
        if p.poll() is not None: raise RuntimeError(f"rk proxy serve exited {p.returncode}: {p.stdout.read()}")
        time.sleep(0.1)
    p.kill()
    raise TimeoutError("rk proxy serve did not answer in 30 s")


def _setup(d, upstream):
    init_proxy(d, {"scripted": {"model": "openai/scripted", "api_base": upstream.url, "group": "test",
                                "input_cost_per_token": PRICE_IN, "output_cost_per_token": PRICE_OUT, "max_tokens": MAX_TOKENS}})
    store = ProxyStore(d)
    keys = [store.create_key(f"k{i:02d}", quotas=[f"test:daily:{TOKENS}"] if i < KEYS // 2 else [], budget_usd=None if i < KEYS // 2 else BUDGET)[1]
            for i in range(KEYS)]
    free = store.create_key("free")[1]
    store.close()
    return keys, free


async def _load(urls, keys):
    "200 clients (10 per key), each asking 3 new questions in turn, spread over `urls`; the answers per key."
    out = {k: [] for k in keys}
    async with httpx.AsyncClient(limits=httpx.Limits(max_connections=250), timeout=60) as client:
        async def one_client(i, key, c):
            for r in range(REQUESTS_PER_CLIENT):
                body = {"model": "scripted", "max_tokens": MAX_TOKENS, "messages": [{"role": "user", "content": f"key {i:02d} client {c:02d} request {r:02d}, echo"}]}
                resp = await client.post(urls[(c + r) % len(urls)] + "/v1/chat/completions", json=body, headers={"Authorization": f"Bearer {key}"})
                out[key].append((resp.status_code, resp.json()))
        await asyncio.gather(*(one_client(i, key, c) for i, key in enumerate(keys) for c in range(CLIENTS_PER_KEY)))
    return out


def _check(urls, keys, out):
    time.sleep(0.5)                                                                            # each process writes its ledger rows within 0.2 s
    worst_usd = 10 * (MAX_TOKENS * PRICE_OUT + 10 * PRICE_IN)
    for i, key in enumerate(keys):
        rows = out[key]
        assert len(rows) == CLIENTS_PER_KEY * REQUESTS_PER_CLIENT
        assert {s for s, _ in rows} <= {200, 429}, {s for s, _ in rows}
        assert all(b["error"]["code"] == "insufficient_quota" for s, b in rows if s == 429)
        ok = [b for s, b in rows if s == 200]
        tokens = sum(b["usage"]["total_tokens"] for b in ok)
        usd = sum(b["proxy"]["cost_usd"] for b in ok)
        u = httpx.get(urls[-1] + "/v1/usage", headers={"Authorization": f"Bearer {key}"}).json()
        assert u["key"]["name"] == f"k{i:02d}" and u["totals"]["requests"] == len(rows)          # its own requests, no other key's
        assert u["totals"]["cost_usd"] == pytest.approx(usd)
        lim = [l for l in u["limits"] if l["period"] == ("daily" if i < KEYS // 2 else "total")]
        assert lim and all(l["reserved_tokens"] == 0 and l["reserved_usd"] == pytest.approx(0, abs=1e-12) for l in lim)
        if i < KEYS // 2:
            assert lim[0]["tokens_used"] == tokens <= TOKENS, (key, lim, tokens)
            assert tokens > TOKENS - CLIENTS_PER_KEY * (MAX_TOKENS + 10)                          # refused only while others held reservations
        else:
            assert lim[0]["usd_used"] == pytest.approx(usd) and usd <= BUDGET, (key, lim, usd)
            assert usd > BUDGET - worst_usd
        assert 0 < len(ok) < len(rows)                                                         # the limit bound: some answered, some refused


def test_200_clients_20_keys_one_process(tmp_path, rk):
    with ScriptedServer(reply="echo") as up:
        keys, free = _setup(tmp_path / "p", up)
        p, url = _serve(rk, tmp_path / "p")
        try:
            t0 = time.perf_counter()
            out = asyncio.run(_load([url], keys))
            print(f"{sum(len(v) for v in out.values())} requests in {time.perf_counter() - t0:.1f} s")
            _check([url], keys, out)
        finally:
            p.terminate(); p.wait(10)


def test_two_processes_on_one_redis_keep_one_quota(tmp_path, rk, redis_url):
    with ScriptedServer(reply="echo") as up:
        keys, free = _setup(tmp_path / "p", up)
        (p1, u1), (p2, u2) = _serve(rk, tmp_path / "p", redis_url), _serve(rk, tmp_path / "p", redis_url)
        try:
            t0 = time.perf_counter()
            out = asyncio.run(_load([u1, u2], keys))
            print(f"{sum(len(v) for v in out.values())} requests in {time.perf_counter() - t0:.1f} s")
            _check([u1, u2], keys, out)
            body = {"model": "scripted", "max_tokens": 8, "messages": [{"role": "user", "content": "asked at one, cached for both"}]}
            h = {"Authorization": f"Bearer {free}"}
            first = httpx.post(u1 + "/v1/chat/completions", json=body, headers=h).json()
            second = httpx.post(u2 + "/v1/chat/completions", json=body, headers=h).json()
            assert first["proxy"]["cached"] is False and second["proxy"]["cached"] is True and second["proxy"]["cost_usd"] == 0
        finally:
            for p in (p1, p2): p.terminate(); p.wait(10)
