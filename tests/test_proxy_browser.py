"""The proxy's web page (research_kit.proxy.web) in Debian's headless Chromium through Playwright, against a real proxy
(research_kit.proxy.app on 127.0.0.1) in front of the scripted upstream: a bad key is refused with the API's message; with
a user key the playground answers the same prompt twice (the second from the cache: $0 charged, the dollars saved shown),
streams an answer, and the usage tab shows totals, limits and bars in its SVG charts; with the admin key a key is created
(its secret shown once, and it works) and revoked (it stops working). The page runs under its strict
Content-Security-Policy (`page_csp()`), logs no console error and sends no request off 127.0.0.1 (any is blocked and
recorded). A screenshot of each stage is written to _proxy_screenshots/ for review."""
import json
import re
import time
import urllib.error
import urllib.request

import pytest

from conftest import screenshot_dir

MODELS = {"scripted": {"model": "openai/scripted", "group": "test", "input_cost_per_token": 1e-6, "output_cost_per_token": 2e-6, "max_tokens": 64}}


def _call(url: str, key: str, method: str = "GET", body: dict | None = None) -> tuple[int, dict]:
    "(status, JSON body) of one request to the proxy with `key`."
    req = urllib.request.Request(url, method=method, data=None if body is None else json.dumps(body).encode(),
                                 headers={"Authorization": f"Bearer {key}", "Content-Type": "application/json"})
    try:
        with urllib.request.urlopen(req, timeout=30) as r: return r.status, json.loads(r.read())
    except urllib.error.HTTPError as e: return e.code, json.loads(e.read())


@pytest.fixture(scope="module")
def proxy(tmp_path_factory):
    "A proxy on 127.0.0.1 serving one scripted model; its admin secret and a user key (alice) with quotas and a budget."
    from research_kit.proxy.app import ProxyServer, init_proxy
    from research_kit.testing import ScriptedServer
    with ScriptedServer(reply="echo") as up:
        d = tmp_path_factory.mktemp("proxy") / "px"
        admin = init_proxy(d, models={"scripted": MODELS["scripted"] | {"api_base": up.url}})
        with ProxyServer(d, port=0) as srv:
            status, made = _call(f"{srv.url}/admin/keys", admin, "POST",
                                 {"name": "alice", "quotas": ["test:daily:100000", "*:monthly:$1"], "budget_usd": 5})
            assert status == 200, made
            yield dict(url=srv.url, admin=admin, user=made["secret"], user_key=made["key"])


def _page(browser, url: str):
    """A 1280x800 page whose console errors and off-machine requests are recorded (and those requests blocked); `/` must be
    exactly page_html() and is served with page_csp() as its Content-Security-Policy."""
    from research_kit.proxy.web import page_csp, page_html
    ctx = browser.new_context(viewport={"width": 1280, "height": 800})
    pg = ctx.new_page()
    pg.set_default_timeout(15_000)
    pg.errors, pg.outside = [], []
    pg.on("console", lambda m: pg.errors.append(f"console {m.type}: {m.text}") if m.type == "error" else None)
    pg.on("pageerror", lambda e: pg.errors.append(f"page error: {e}"))

    def guard(route):
        u = route.request.url
        if not u.startswith(url + "/"):
            pg.outside.append(u)
            return route.abort()
        if u != url + "/": return route.continue_()
        served = route.fetch()
        pg.served.append((served.status, served.text() == page_html()))
        route.fulfill(response=served, headers=served.headers | {"content-security-policy": page_csp()})
    pg.served = []
    ctx.route("**/*", guard)
    pg.goto(url + "/")
    assert pg.served == [(200, True)], pg.served
    return pg


def _text_is(pg, selector: str, test: str):
    "Wait until `selector`'s text passes the JS predicate `test` (on `t`)."
    pg.wait_for_function(f"() => {{ const e = document.querySelector({json.dumps(selector)}); const t = e && e.textContent; return !!e && ({test}); }}")


def _sign_in(pg, key: str):
    pg.fill("#key", key)
    pg.click("#signin-form button[type=submit]")


def test_proxy_web_page(chromium, proxy):
    t0 = time.monotonic()
    shots = screenshot_dir("_proxy_screenshots")
    url, user = proxy["url"], proxy["user"]
    pg = _page(chromium, url)
    pg.wait_for_selector("#signin #key")
    pg.screenshot(path=str(shots / "1_sign_in.png"))

    # a bad key: the API's own message, nothing kept
    _sign_in(pg, "rk-not-a-key-at-all")
    _text_is(pg, "#signin-error", "t.startsWith('401: ')")
    assert "invalid API key" in pg.inner_text("#signin-error") and pg.is_hidden("#app")
    assert pg.evaluate("sessionStorage.length + localStorage.length") == 0
    pg.screenshot(path=str(shots / "2_bad_key.png"))
    expected = [e for e in pg.errors if "status of 401" in e]  # Chromium logs the refused fetch itself
    assert len(expected) == 1 and expected == pg.errors, pg.errors
    pg.errors.clear()

    # a user key: the header says whose, the key sits in sessionStorage only, never in the URL
    _sign_in(pg, user)
    pg.wait_for_selector("#app", state="visible")
    assert pg.inner_text("#who-name") == "alice" and pg.inner_text("#who-prefix") == proxy["user_key"]["prefix"] + "…"
    assert pg.is_hidden("#tab-admin") and pg.is_hidden("#who-admin")
    assert pg.evaluate("[sessionStorage.getItem('rk-proxy-key'), localStorage.length]") == [user, 0] and "rk-" not in pg.url
    pg.wait_for_selector("#model option[value=scripted]", state="attached")

    # the playground: one prompt twice; the second is answered from the cache, charged $0, the dollars saved shown
    prompt = "What is the capital of France? <b>bold</b>"
    pg.fill("#user-msg", prompt)
    pg.click("#send")
    _text_is(pg, "#f-cached", "t === 'no'")
    assert pg.inner_text("#answer") == prompt and pg.locator("#answer b").count() == 0  # model output shown as text
    first_cost = pg.inner_text("#f-cost")
    assert first_cost.startswith("$0.0000") and first_cost != "$0", first_cost
    assert re.fullmatch(r"\d+ \(\d+ prompt \+ \d+ completion\)", pg.inner_text("#f-tokens")), pg.inner_text("#f-tokens")
    pg.screenshot(path=str(shots / "3_first_answer.png"))
    pg.click("#send")
    _text_is(pg, "#f-cached", "t.startsWith('yes')")
    assert pg.inner_text("#f-cost") == "$0" and pg.inner_text("#f-saved") == first_cost
    assert pg.inner_text("#f-added").endswith(" ms")
    pg.screenshot(path=str(shots / "4_cached_answer.png"))
    pg.click("#add-turn")  # the answer carried over as an assistant turn, then a new user turn; both removed again
    assert pg.evaluate("chatBody().messages.map(m => m.role + ':' + m.content)") == [f"user:{prompt}", f"assistant:{prompt}", "user:"]
    pg.click("#turns button[aria-label='Remove message 3']")
    pg.click("#turns button[aria-label='Remove message 2']")
    assert pg.locator("#turns .turn").count() == 0

    # a streamed answer: the deltas are appended one text node at a time
    streamed = "Stream this answer to me, word by word, please."
    pg.check("#stream")
    pg.fill("#user-msg", streamed)
    pg.click("#send")
    _text_is(pg, "#f-total", "t.includes('chunks streamed')")
    assert pg.inner_text("#answer") == streamed
    assert pg.evaluate("document.getElementById('answer').childNodes.length") > 3
    assert "completion" in pg.inner_text("#f-tokens") and pg.inner_text("#f-cached") == "no"
    pg.screenshot(path=str(shots / "5_streamed.png"))

    # the usage tab: totals, three limit meters, bars in the charts, the recent requests
    pg.click("#tab-usage")
    for _ in range(20):  # the ledger is written in batches; refresh until the three requests are in
        _text_is(pg, "#usage-asof", "t.startsWith('as of')")
        if pg.inner_text("#totals .tile:first-child .v") == "3": break
        pg.click("#usage-refresh")
        time.sleep(0.25)
    tiles = pg.locator("#totals .tile").all_inner_texts()
    assert "3" in tiles[0] and "1" in tiles[1] and "33% of requests" in tiles[1], tiles
    assert pg.locator("#limits [role=progressbar]").count() == 3
    assert pg.locator("#charts svg.chart").count() == 2
    for series in ("charged", "cached", "cost", "saved"):
        assert pg.locator(f"#charts rect.bar[data-series={series}]").count() == 1, series
    assert pg.locator("#recent tbody tr").count() == 3
    pg.screenshot(path=str(shots / "6_usage.png"), full_page=True)

    # sign out: the key is gone
    pg.click("#signout")
    pg.wait_for_selector("#signin #key", state="visible")
    assert pg.evaluate("sessionStorage.length") == 0

    # the admin key: create a key (its secret shown once, and it works), then revoke it (it stops working)
    _sign_in(pg, proxy["admin"])
    pg.wait_for_selector("#tab-admin", state="visible")
    pg.click("#tab-admin")
    pg.wait_for_selector("#keys tbody tr:nth-child(2)")
    pg.fill("#new-name", "bob")
    pg.fill("#new-quotas", "test:daily:5000")
    pg.fill("#new-budget", "2")
    pg.fill("#new-rpm", "30")
    pg.fill("#new-expires", "30d")
    pg.click("#create-form button[type=submit]")
    pg.wait_for_selector("#new-secret", state="visible")
    secret = pg.input_value("#secret-value")
    assert secret.startswith("rk-") and "shown once" in pg.inner_text("#new-secret")
    _text_is(pg, "#keys", "t.includes('bob')")
    assert _call(f"{url}/v1/models", secret)[0] == 200
    pg.screenshot(path=str(shots / "7_admin_created.png"), full_page=True)
    pg.click("#dismiss-secret")
    assert pg.is_hidden("#new-secret") and secret not in pg.content()
    assert secret not in json.dumps(pg.evaluate("[Object.values(sessionStorage), Object.values(localStorage)]"))
    assert pg.is_disabled("#keys button[aria-label^='Revoke admin ']")  # not the key you are signed in with
    pg.once("dialog", lambda d: d.accept())
    pg.click("#keys button[aria-label^='Revoke bob ']")
    _text_is(pg, "#admin-note", "t.startsWith('Revoked bob')")  # shown once the list is reloaded
    bob = pg.locator("#keys tbody tr", has_text="bob")
    assert "revoked" in bob.inner_text() and bob.locator("button").count() == 0
    assert _call(f"{url}/v1/models", secret)[0] == 401
    _text_is(pg, "#all-usage", "t.includes('alice')")
    pg.screenshot(path=str(shots / "8_admin_revoked.png"), full_page=True)

    assert not pg.errors, pg.errors
    assert not pg.outside, pg.outside
    pg.context.close()
    assert time.monotonic() - t0 < 45
