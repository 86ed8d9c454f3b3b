"""The proxy's HTTP API from real clients: the official openai SDK (streaming included), litellm pointed at the
proxy, httpx for what SDKs hide; every error status; cache hits not charged; /assessment; keys blind to each other.

Everything runs on 127.0.0.1: a ScriptedServer upstream and the proxy on uvicorn in a thread (ProxyServer).
"""
import json
import os
import time

import httpx
import openai
import pytest

from research_kit.proxy.app import ProxyServer, init_proxy
from research_kit.proxy.store import ProxyStore
from research_kit.testing import ScriptedServer

PRICE_IN, PRICE_OUT = 1e-6, 2e-6


def _model(url, **kw):
    return {"model": "openai/scripted", "api_base": url, "group": "test", "input_cost_per_token": PRICE_IN,
            "output_cost_per_token": PRICE_OUT, "max_tokens": 64} | kw


@pytest.fixture(scope="module")
def proxy(tmp_path_factory):
    "A proxy over three upstreams (echo, always 500, always hangs), an admin key and a few user keys."
    d = tmp_path_factory.mktemp("proxy")
    with ScriptedServer(reply="echo") as up, ScriptedServer(faults={"500": 1.0}) as broken, \
            ScriptedServer(faults={"timeout": 1.0}, hang_s=3) as hangs:
        admin = init_proxy(d, {"scripted": _model(up.url), "other": _model(up.url, group="other"),
                               "broken": _model(broken.url), "hangs": _model(hangs.url)},
                           timeout=0.5, max_attempts=1, max_body_bytes=20_000)
        store = ProxyStore(d)
        keys = {"alice": store.create_key("alice")[1], "bob": store.create_key("bob")[1],
                "only_test": store.create_key("only_test", models=["scripted", "broken", "hangs"])[1],
                "rpm": store.create_key("rpm", rpm=2)[1], "quota": store.create_key("quota", quotas=["test:daily:200"])[1],
                "revoked": store.create_key("revoked")[1], "old": store.create_key("old", expires=time.time() + 0.5)[1]}
        store.revoke("revoked")
        store.close()
        with ProxyServer(d) as srv:
            srv.admin, srv.keys, srv.upstream = admin, keys, up
            yield srv


def sdk(proxy, who="alice", **kw):
    return openai.OpenAI(base_url=proxy.url + "/v1", api_key=proxy.keys.get(who, who), max_retries=0, **kw)


def chat(proxy, who, body, **kw):
    key = proxy.keys.get(who, who)
    return httpx.post(proxy.url + "/v1/chat/completions", json=body, headers={"Authorization": f"Bearer {key}"}, timeout=30, **kw)


def msg(text):
    return [{"role": "user", "content": text}]


def test_openai_sdk_chat_models_and_cache(proxy):
    client = sdk(proxy)
    assert {m.id for m in client.models.list()} == {"scripted", "other", "broken", "hangs"}
    assert {m.id for m in sdk(proxy, "only_test").models.list()} == {"scripted", "broken", "hangs"}
    raw = client.chat.completions.with_raw_response.create(model="scripted", messages=msg("sdk hello there"), max_tokens=16)
    r = raw.parse()
    assert r.choices[0].message.content == "sdk hello there" and r.choices[0].finish_reason == "stop"
    assert r.usage.total_tokens == r.usage.prompt_tokens + r.usage.completion_tokens > 0
    assert raw.headers["x-rk-cached"] == "false" and float(raw.headers["x-rk-added-ms"]) >= 0
    cost = r.usage.prompt_tokens * PRICE_IN + r.usage.completion_tokens * PRICE_OUT
    assert float(raw.headers["x-rk-cost-usd"]) == pytest.approx(cost)
    again = client.chat.completions.with_raw_response.create(model="scripted", messages=msg("sdk hello there"), max_tokens=16)
    assert again.headers["x-rk-cached"] == "true" and float(again.headers["x-rk-cost-usd"]) == 0
    assert float(again.headers["x-rk-saved-usd"]) == pytest.approx(cost)
    body = again.http_response.json()
    assert body["proxy"]["cached"] is True and body["choices"][0]["message"]["content"] == "sdk hello there"
    n3 = client.chat.completions.create(model="scripted", messages=msg("three of them"), max_tokens=8, n=3, temperature=1.0)
    assert [c.index for c in n3.choices] == [0, 1, 2]


def test_openai_sdk_streaming(proxy):
    client = sdk(proxy)
    chunks = list(client.chat.completions.create(model="scripted", messages=msg("stream these five words please"),
                                                 stream=True, stream_options={"include_usage": True}))
    text = "".join(c.choices[0].delta.content or "" for c in chunks if c.choices)
    assert text == "stream these five words please"
    assert sum(1 for c in chunks if c.choices and c.choices[0].delta.content) == 5
    assert [c.choices[0].finish_reason for c in chunks if c.choices and c.choices[0].finish_reason] == ["stop"]
    assert chunks[-1].usage.total_tokens > 0 and chunks[-1].choices == []


def test_litellm_pointed_at_the_proxy(proxy):
    import litellm
    kw = dict(model="openai/scripted", api_base=proxy.url + "/v1", api_key=proxy.keys["bob"], max_retries=0)
    r = litellm.completion(messages=msg("litellm says hi"), **kw)
    assert r.choices[0].message.content == "litellm says hi" and r.usage.total_tokens > 0
    s = litellm.completion(messages=msg("litellm streams"), stream=True, **kw)
    assert "".join(c.choices[0].delta.content or "" for c in s) == "litellm streams"
    with pytest.raises(litellm.AuthenticationError):
        litellm.completion(messages=msg("x"), **(kw | {"api_key": "rk-wrong"}))


def test_every_error_status(proxy):
    def err(r, status, code=None):
        assert r.status_code == status, (r.status_code, r.text)
        e = r.json()["error"]
        assert set(e) == {"message", "type", "code", "param"} and e["message"]
        if code: assert e["code"] == code, e
        return r
    body = {"model": "scripted", "messages": msg("hi"), "max_tokens": 8}
    err(httpx.post(proxy.url + "/v1/chat/completions", json=body), 401, "invalid_api_key")             # no key
    err(chat(proxy, "rk-not-a-key", body), 401, "invalid_api_key")
    assert "revoked" in err(chat(proxy, "revoked", body), 401).json()["error"]["message"]
    time.sleep(0.6)
    assert "expired" in err(chat(proxy, "old", body), 401).json()["error"]["message"]
    err(chat(proxy, "only_test", body | {"model": "other"}), 403, "model_not_allowed")
    err(httpx.get(proxy.url + "/admin/keys", headers={"Authorization": f"Bearer {proxy.keys['alice']}"}), 403, "admin_only")
    err(chat(proxy, "alice", body | {"model": "gpt-5"}), 404, "model_not_found")
    err(chat(proxy, "alice", body | {"max_tokens": 10_000}), 400, "invalid_max_tokens")
    err(httpx.post(proxy.url + "/v1/chat/completions", content=b"{not json", headers={"Authorization": f"Bearer {proxy.keys['alice']}"}), 400, "invalid_json")
    err(chat(proxy, "alice", body | {"messages": msg("x" * 30_000)}), 413, "request_too_large")
    err(chat(proxy, "alice", body | {"model": "broken"}), 502, "upstream_error")
    t0 = time.perf_counter()
    err(chat(proxy, "alice", body | {"model": "hangs"}), 504, "upstream_timeout")
    assert time.perf_counter() - t0 < 2.5                                           # the proxy's timeout, not the upstream's hang
    codes = [chat(proxy, "rpm", body | {"messages": msg(f"rpm {i}")}).status_code for i in range(3)]
    assert codes == [200, 200, 429]
    r = err(chat(proxy, "rpm", body), 429, "rate_limit_exceeded")
    assert 1 <= int(r.headers["retry-after"]) <= 60
    with pytest.raises(openai.RateLimitError):
        sdk(proxy, "rpm").chat.completions.create(**body)


def test_quota_429_with_retry_after_and_cache_hits_free(proxy):
    body = {"model": "scripted", "max_tokens": 20}
    first = chat(proxy, "quota", body | {"messages": msg("quota question 0 please")})
    assert first.status_code == 200
    codes = [chat(proxy, "quota", body | {"messages": msg(f"quota question {i} please")}).status_code for i in range(1, 20)]
    assert 200 in codes and codes[-1] == 429
    refused = chat(proxy, "quota", body | {"messages": msg("quota question 98 please")})
    assert refused.status_code == 429 and refused.json()["error"]["code"] == "insufficient_quota"
    assert 0 < int(refused.headers["retry-after"]) <= 86_400                          # until the next UTC day
    usage = httpx.get(proxy.url + "/v1/usage", headers={"Authorization": f"Bearer {proxy.keys['quota']}"}).json()
    lim = next(l for l in usage["limits"] if l["group"] == "test" and l["period"] == "daily")
    assert lim["tokens_used"] <= lim["tokens_limit"] == 200 and lim["reserved_tokens"] == 0
    assert lim["tokens_used"] + 20 + 6 > 200                                          # refused only when the worst case no longer fits
    again = chat(proxy, "quota", body | {"messages": msg("quota question 0 please")})   # cached: answered and free, even now
    assert again.status_code == 200 and again.json()["proxy"]["cached"] is True and again.json()["proxy"]["cost_usd"] == 0
    after = httpx.get(proxy.url + "/v1/usage", headers={"Authorization": f"Bearer {proxy.keys['quota']}"}).json()
    lim2 = next(l for l in after["limits"] if l["group"] == "test" and l["period"] == "daily")
    assert lim2["tokens_used"] == lim["tokens_used"] and after["totals"]["saved_usd"] > 0


def test_no_key_sees_another_keys_usage(proxy):
    chat(proxy, "alice", {"model": "scripted", "messages": msg("alice's secret question"), "max_tokens": 8})
    chat(proxy, "bob", {"model": "scripted", "messages": msg("bob's question"), "max_tokens": 8})
    for who, other in (("alice", "bob"), ("bob", "alice")):
        u = httpx.get(proxy.url + "/v1/usage", headers={"Authorization": f"Bearer {proxy.keys[who]}"}).json()
        assert u["key"]["name"] == who and u["totals"]["requests"] >= 1
        text = json.dumps(u)
        assert proxy.keys[other] not in text and proxy.keys[who] not in text and f'"{other}"' not in text
        assert "question" not in text                                                 # no prompt text in usage at all


def test_admin_endpoints(proxy):
    h = {"Authorization": f"Bearer {proxy.admin}"}
    made = httpx.post(proxy.url + "/admin/keys", json={"name": "carol", "quotas": ["test:monthly:$0.01"], "rpm": 5}, headers=h).json()
    assert made["secret"].startswith("rk-") and made["key"]["name"] == "carol" and "secret" not in made["key"]
    ok = chat(proxy, made["secret"], {"model": "scripted", "messages": msg("carol asks"), "max_tokens": 8})
    assert ok.status_code == 200
    listed = httpx.get(proxy.url + "/admin/keys", headers=h).json()["data"]
    assert "carol" in [k["name"] for k in listed] and made["secret"] not in json.dumps(listed)
    gone = httpx.delete(proxy.url + f"/admin/keys/{made['key']['id']}", headers=h).json()
    assert gone["key"]["revoked_at"]
    assert chat(proxy, made["secret"], {"model": "scripted", "messages": msg("carol again"), "max_tokens": 8}).status_code == 401
    assert httpx.post(proxy.url + "/admin/keys", json={"name": "x", "colour": "red"}, headers=h).status_code == 400
    rows = httpx.get(proxy.url + "/admin/usage", headers=h).json()["data"]
    assert {"alice", "bob"} <= {r["key_name"] for r in rows}
    assert httpx.get(proxy.url + "/").status_code == 200


RUBRIC = "Key Concept,Instructions,Extensive Evidence,Convincing Evidence,Limited Evidence,No Evidence\nNaming,Are names clear?,a,b,c,d\n"


def test_assessment_with_code_orgs_form_fields(proxy):
    answer = json.dumps([{"Key Concept": "Naming", "Observations": "clear names", "Grade": "Convincing Evidence", "Reason": "ok"}])
    with ScriptedServer(reply=answer) as grader:
        d = proxy.dir.parent / "assess"
        admin = init_proxy(d, {"grader": _model(grader.url, max_tokens=200)})
        with ProxyServer(d) as p:
            form = {"code": "var x = 1;", "prompt": "Grade this.", "rubric": RUBRIC, "examples": "[]", "model": "grader",
                    "num-responses": "1", "temperature": "0.2", "remove-comments": "1", "response-type": "json", "api-key": admin}
            r = httpx.post(p.url + "/assessment", data=form, timeout=30)
            assert r.status_code == 200, r.text
            assert r.json()["data"][0]["Label"] == "Convincing Evidence" and r.json()["metadata"]["proxy"]["cached"] is False
            again = httpx.post(p.url + "/assessment", data=form, timeout=30).json()
            assert again["metadata"]["proxy"] == {"cached": True, "cost_usd": 0.0, "saved_usd": pytest.approx(r.json()["metadata"]["proxy"]["cost_usd"])}
            assert grader.requests == 1
            bad = httpx.post(p.url + "/assessment", data=form | {"num-responses": "three"})
            assert bad.status_code == 400 and "num-responses" in bad.json()["error"]["message"]
            assert httpx.post(p.url + "/assessment", data=form | {"code": ""}).status_code == 400
            assert httpx.post(p.url + "/assessment", data=form | {"api-key": "rk-bad"}).status_code == 401


def test_rk_proxy_serve_with_the_embedded_model_answers_the_openai_sdk(tmp_path, rk):
    "The README's path: rk proxy init, a key, rk proxy serve; the embedded model answers, offline."
    import re
    import socket
    import subprocess
    d = tmp_path / "proxy"
    init = rk("proxy", "init", "--dir", str(d), cwd=tmp_path, timeout=120)
    assert init.returncode == 0, init.stderr
    admin = re.search(r"rk-[A-Za-z0-9_-]{20,}", init.stdout).group(0)
    made = rk("proxy", "keys", "create", "--dir", str(d), "--name", "me", "--quota", "local:daily:5000", cwd=tmp_path, timeout=120)
    assert made.returncode == 0, made.stderr
    key = re.search(r"rk-[A-Za-z0-9_-]{20,}", made.stdout).group(0)
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0)); port = s.getsockname()[1]
    env = {k: v for k, v in os.environ.items() if not k.endswith("_API_KEY")} | {"HF_HUB_OFFLINE": "1", "NO_PROXY": "*"}
    p = subprocess.Popen([rk.path, "proxy", "serve", "--dir", str(d), "--port", str(port)], cwd=tmp_path, env=env,
                         stdin=subprocess.DEVNULL, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    try:
        client = openai.OpenAI(base_url=f"http://127.0.0.1:{port}/v1", api_key=key, max_retries=0, timeout=120)
        for _ in range(300):
            try: models = [m.id for m in client.models.list()]; break
            except openai.APIConnectionError: time.sleep(0.1)
        assert models == ["local/gemma-3-270m"]
        ask = dict(model="local/gemma-3-270m", messages=msg("What is the capital of France?"), max_tokens=12, temperature=0)
        r = client.chat.completions.create(**ask)
        assert r.choices[0].message.content.strip() and r.usage.completion_tokens > 0
        again = client.chat.completions.with_raw_response.create(**ask)
        assert again.headers["x-rk-cached"] == "true" and again.parse().choices[0].message.content == r.choices[0].message.content
        with pytest.raises(openai.AuthenticationError):
            openai.OpenAI(base_url=f"http://127.0.0.1:{port}/v1", api_key=admin[:-2] + "xx", max_retries=0).models.list()
    finally:
        p.terminate()
        out = p.communicate(timeout=20)[0]
    assert key not in out and admin not in out                                              # secrets never in the server's output
