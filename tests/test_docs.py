"""The docs site: scripts/build_docs.py builds it from the notebooks (every cell run), and every page opens in
headless Chromium (Debian's, through Playwright's `executable_path`: nothing is downloaded) with no console
error, no failed or network request and no broken internal link. A full-page screenshot of each page is
written to _docs_screenshots/ for review.

Bounded: the build has BUILD_TIMEOUT_S, each page load PAGE_TIMEOUT_MS; the two small builds take seconds.
"""
import functools
import http.server
import importlib
import json
import os
import shutil
import subprocess
import sys
import threading
from html.parser import HTMLParser
from pathlib import Path
from urllib.parse import unquote, urlsplit

import pytest

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "scripts"))
import build_docs  # noqa: E402
from conftest import screenshot_dir  # noqa: E402

BUILD_TIMEOUT_S = 1500
PAGE_TIMEOUT_MS = 30_000
NOTEBOOKS = build_docs.site_order(ROOT / "nbs")
PAGES = [build_docs.page_name(rel).as_posix() for rel, _ in NOTEBOOKS]


def build(out: Path, *args, timeout=BUILD_TIMEOUT_S) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, str(ROOT / "scripts" / "build_docs.py"), "--out", str(out), *args],
                          capture_output=True, text=True, timeout=timeout, stdin=subprocess.DEVNULL)


@pytest.fixture(scope="module")
def site(tmp_path_factory):
    "The site, built once from nbs/ with every cell run (RESEARCH_KIT_DOCS_SITE=_docs checks a site already built)."
    if os.environ.get("RESEARCH_KIT_DOCS_SITE"):
        return Path(os.environ["RESEARCH_KIT_DOCS_SITE"]).resolve()
    out = tmp_path_factory.mktemp("docs") / "_docs"
    res = build(out)
    assert res.returncode == 0, f"docs build failed:\n{res.stdout}\n{res.stderr}"
    assert "docs: " in res.stdout and str(len(PAGES)) + " pages" in res.stdout
    return out


class _Quiet(http.server.SimpleHTTPRequestHandler):
    def log_message(self, *args): pass


@pytest.fixture(scope="module")
def server(site):
    "The site on 127.0.0.1, as a static host serves it."
    srv = http.server.ThreadingHTTPServer(("127.0.0.1", 0), functools.partial(_Quiet, directory=str(site)))
    srv.daemon_threads = True
    t = threading.Thread(target=srv.serve_forever, daemon=True)
    t.start()
    yield f"http://127.0.0.1:{srv.server_address[1]}/"
    srv.shutdown()
    srv.server_close()
    t.join(timeout=10)


@pytest.fixture(scope="module")
def shots():
    return screenshot_dir("_docs_screenshots")


class _Ids(HTMLParser):
    def __init__(self):
        super().__init__()
        self.ids = set()

    def handle_starttag(self, tag, attrs):
        for k, v in attrs:
            if k in ("id", "name") and v: self.ids.add(v)


@functools.lru_cache(maxsize=None)
def ids_of(path: Path) -> frozenset:
    p = _Ids()
    p.feed(path.read_text(encoding="utf-8"))
    return frozenset(p.ids)


def link_problems(site: Path, base: str, page: str, hrefs: list[str]) -> list[str]:
    "Every link to this site names a file that exists and, with a #fragment, an id on that page."
    origin, problems = urlsplit(base).netloc, []
    for href in hrefs:
        u = urlsplit(href)
        if u.scheme not in ("http", "https") or u.netloc != origin: continue  # other sites, mailto:, data:
        target = site / unquote(u.path.lstrip("/"))
        if target.is_dir(): target = target / "index.html"
        if not target.is_file():
            problems.append(f"{page}: link to a missing file {href}")
        elif u.fragment and target.suffix == ".html" and unquote(u.fragment) not in ids_of(target):
            problems.append(f"{page}: link to a missing anchor {href}")
    return problems


def test_every_notebook_has_a_page_in_sidebar_order():
    "index first, every notebook once, in nbs/sidebar.yml's order; pages named as nbdev names them."
    rels = [rel.as_posix() for rel, _ in NOTEBOOKS]
    assert rels[0] == "index.ipynb" and PAGES[0] == "index.html"
    assert sorted(rels) == sorted(rel.as_posix() for rel, _ in build_docs.find_notebooks(ROOT / "nbs"))
    assert "client.html" in PAGES and "experiments/prompt_sweep.html" in PAGES
    assert len(set(PAGES)) == len(PAGES)


def test_sidebar_yml_lists_every_notebook():
    "Quarto users get the same site: nbs/sidebar.yml lists each notebook once, and only notebooks that exist."
    listed = [p for p, _ in build_docs.sidebar_entries(ROOT / "nbs")]
    found = sorted(rel.as_posix() for rel, _ in build_docs.find_notebooks(ROOT / "nbs"))
    fix = "run: .venv/bin/python scripts/build_docs.py --write-sidebar"
    assert sorted(listed) == found, f"nbs/sidebar.yml is out of date ({fix}): " \
        f"missing {sorted(set(found) - set(listed))}, not notebooks {sorted(set(listed) - set(found))}"


def test_notebooks_missing_from_the_sidebar_go_where_their_names_sort(tmp_path):
    nbs = tmp_path / "nbs"
    (nbs / "experiments").mkdir(parents=True)
    for name in ["index", "00_a", "01_b", "02_new", "10_c", "11_new", "experiments/x", "experiments/y"]:
        (nbs / f"{name}.ipynb").write_text(_nb(["md:# t"]))
    (nbs / "sidebar.yml").write_text("website:\n  sidebar:\n    contents:\n      - index.ipynb\n"
                                     "      - section: Core\n        contents:\n          - 00_a.ipynb\n          - 01_b.ipynb\n"
                                     "      - section: Domain\n        contents:\n          - 10_c.ipynb\n          - gone.ipynb\n"
                                     "      - section: Runs\n        contents:\n          - experiments/y.ipynb\n")
    got = [(rel.as_posix(), sec) for rel, sec in build_docs.site_order(nbs)]
    assert got == [("index.ipynb", ""), ("00_a.ipynb", "Core"), ("01_b.ipynb", "Core"), ("02_new.ipynb", "Core"),
                   ("10_c.ipynb", "Domain"), ("11_new.ipynb", "Domain"), ("experiments/y.ipynb", "Runs"),
                   ("experiments/x.ipynb", "Experiments")]
    assert build_docs.main(["--nbs", str(nbs), "--write-sidebar"]) == 0
    assert [p for p, _ in build_docs.sidebar_entries(nbs)] == [p for p, _ in got]
    assert "gone.ipynb" not in (nbs / "sidebar.yml").read_text()


@pytest.mark.parametrize("page", PAGES)
def test_page_in_chromium(site, server, chromium, shots, page):
    errors, outside, failed = [], [], []
    origin = server.rstrip("/")
    pg = chromium.new_page(viewport={"width": 1400, "height": 900})
    pg.set_default_timeout(PAGE_TIMEOUT_MS)
    pg.on("console", lambda m: errors.append(f"console {m.type}: {m.text}") if m.type == "error" else None)
    pg.on("pageerror", lambda e: errors.append(f"page error: {e}"))
    pg.on("requestfailed", lambda r: failed.append(f"{r.url} ({r.failure})"))
    pg.on("response", lambda r: failed.append(f"{r.url} (HTTP {r.status})") if r.status >= 400 else None)
    pg.on("request", lambda r: outside.append(r.url) if not (r.url.startswith(origin + "/") or r.url.startswith("data:")) else None)
    try:
        resp = pg.goto(server + page, wait_until="load", timeout=PAGE_TIMEOUT_MS)
        assert resp is not None and resp.ok, f"{page}: HTTP {resp and resp.status}"
        pg.wait_for_load_state("networkidle", timeout=PAGE_TIMEOUT_MS)
        hrefs = pg.eval_on_selector_all("a[href]", "els => els.map(e => e.href)")
        nav = pg.eval_on_selector_all("nav.sidebar a", "els => els.map(e => [e.getAttribute('href'), e.className])")
        title = pg.inner_text("h1.title")
        broken_imgs = pg.eval_on_selector_all("img", "els => els.filter(e => !(e.complete && e.naturalWidth > 0)).map(e => e.src)")
        shot = shots / (page.replace("/", "__").removesuffix(".html") + ".png")
        pg.screenshot(path=str(shot), full_page=True)
    finally:
        pg.close()

    assert not errors, f"{page}: {errors}"
    assert not failed, f"{page}: requests failed: {failed}"
    assert not outside, f"{page}: requests that left 127.0.0.1: {outside}"
    assert not broken_imgs, f"{page}: images that did not load: {broken_imgs}"
    assert title.strip()
    assert len(nav) == len(PAGES), f"{page}: the sidebar lists {len(nav)} pages, the site has {len(PAGES)}"
    assert [c for _, c in nav].count("current") == 1
    assert not link_problems(site, server, page, hrefs), link_problems(site, server, page, hrefs)
    assert shot.stat().st_size > 10_000


def test_pages_have_no_quarto_or_markdown_leaks(site):
    "What a reader should never see in prose: Quarto fences and attributes, nbdev directives, unrendered markdown."
    import re
    from nbdev.config import get_config
    cfg = get_config(path=ROOT)
    published = f"{cfg.doc_host}{cfg.doc_baseurl}"  # nbdev's doc links point there: on this site they are relative
    for page in PAGES:
        text = (site / page).read_text(encoding="utf-8")
        assert published not in text, f"{page}: an absolute link to the published site"
        head, body = text.split("<body>", 1)
        prose = re.sub(r"<pre\b.*?</pre>", "", body.split('<main class="content">', 1)[1], flags=re.S)
        for leak in (":::", "{.callout", "{target=", "#| ", "```", "](http"):
            assert leak not in prose, f"{page}: {leak!r} on the page"
        assert "http://" not in head and "https://" not in head, f"{page}: the head references the network"


def test_api_reference_for_every_public_function_and_class(site):
    """Each module's public functions and classes (in its __all__ and nbdev's index) have their show_doc entry on
    the module's page, at the anchor nbdev's doc links use."""
    modidx = importlib.import_module("research_kit._modidx").d["syms"]
    checked, missing = 0, []
    for mod, syms in modidx.items():
        try: public = set(getattr(importlib.import_module(mod), "__all__", []))
        except Exception: continue
        for qual, (url, _) in syms.items():
            name = qual[len(mod) + 1:]
            if "." in name or name not in public: continue
            page, _, anchor = url.partition("#")
            checked += 1
            if not (site / page).is_file(): missing.append(f"{qual}: no page {page}")
            elif anchor not in ids_of(site / page): missing.append(f"{qual}: no #{anchor} on {page}")
    assert checked >= 20 and not missing, missing


def test_outputs_are_on_the_pages(site):
    "The examples ran: printed text, DataFrames as tables and figures appear; code is highlighted."
    client = (site / "client.html").read_text(encoding="utf-8")
    assert 'class="cell api"' in client and 'id="inferenceapi"' in client
    assert '<pre class="highlight"><code class="language-python">' in client and '<span class="k">' in client
    all_html = "".join((site / p).read_text(encoding="utf-8") for p in PAGES)
    assert 'class="output stdout"' in all_html and 'class="dataframe' in all_html
    figures = list(site.rglob("*_files/figure-*.png"))
    assert figures, "no figure was written"


def _nb(cells) -> str:
    def cell(src):
        if src.startswith("md:"):
            return {"cell_type": "markdown", "metadata": {}, "source": src[3:]}
        return {"cell_type": "code", "execution_count": None, "metadata": {}, "outputs": [], "source": src}
    return json.dumps({"cells": [cell(c) for c in cells], "metadata": {"kernelspec": {"display_name": "python3", "language": "python", "name": "python3"}},
                       "nbformat": 4, "nbformat_minor": 5})


def test_directives_links_and_callouts(tmp_path):
    "nbdev's directives and Quarto's cell options are applied; links to notebooks become links to pages."
    nbs = tmp_path / "nbs"
    (nbs / "sub").mkdir(parents=True)
    (nbs / "index.ipynb").write_text(_nb(["md:# Home\n\n> The site's front page.\n\nIntro prose kept. See [the thing](01_thing.ipynb#twice) and [sub](sub/extra.ipynb)."]))
    (nbs / "01_thing.ipynb").write_text(_nb([
        "md:# Thing\n\n> A module.",
        "#| hide\nprint('HIDDEN-OUTPUT')",
        "#| export\ndef twice(x:int, # the number\n         )->int: # two times x\n    \"Two times `x`.\"\n    return 2 * x",
        "twice(21)",
        "#| echo: false\nprint('SHOWN-WITHOUT-CODE')",
        "md:::: {.callout-note}\nA note.\n:::\n\n| a | b |\n|---|---|\n| 1 | 2 |",
        "#| eval: false\nraise SystemExit('never run')",
        "import sys; print('bar\\r', end=''); print('\\rprogress 100%', file=sys.stderr)",
    ]))
    (nbs / "sub" / "extra.ipynb").write_text(_nb(["md:# Extra", "md:Back to [home](../index.ipynb)."]))
    out = tmp_path / "site"
    res = build(out, "--nbs", str(nbs), "--jobs", "2", timeout=300)
    assert res.returncode == 0, res.stdout + res.stderr
    index, thing = (out / "index.html").read_text(), (out / "thing.html").read_text()
    assert "Intro prose kept." in index and 'href="thing.html#twice"' in index and 'href="sub/extra.html"' in index
    assert 'href="../index.html"' in (out / "sub" / "extra.html").read_text()
    assert "HIDDEN-OUTPUT" not in thing and "print(&#x27;HIDDEN" not in thing
    assert 'id="twice"' in thing and 'class="cell api"' in thing and "the number" in thing
    assert "return 2 * x" not in thing  # an export cell's code is the API entry, not a code block
    assert "42" in thing and "SHOWN-WITHOUT-CODE" in thing and "print(&#x27;SHOWN" not in thing
    assert 'class="note callout' in thing.replace("callout-note", "note") and ":::" not in thing and "<table>" in thing
    assert "never run" in thing  # shown, not run
    assert "progress 100%" in thing and "\r" not in thing
    assert [a for a in ("index.html", "thing.html", "sub/extra.html", "site.css") if not (out / a).is_file()] == []


def test_a_failing_notebook_fails_the_build_and_keeps_the_old_site(tmp_path):
    nbs = tmp_path / "nbs"
    nbs.mkdir()
    (nbs / "index.ipynb").write_text(_nb(["md:# Home"]))
    (nbs / "01_bad.ipynb").write_text(_nb(["md:# Bad", "x = 1", "raise ValueError('boom in the notebook')"]))
    out = tmp_path / "site"
    out.mkdir()
    (out / "keep.txt").write_text("the previous build")
    res = build(out, "--nbs", str(nbs), timeout=300)
    assert res.returncode != 0
    assert "01_bad.ipynb" in res.stderr and "cell 2" in res.stderr and "boom in the notebook" in res.stderr
    assert "index.ipynb" not in res.stderr.split("docs build failed")[0].replace("01_bad.ipynb", "")
    assert (out / "keep.txt").read_text() == "the previous build" and not (out / "index.html").exists()
    assert not [p for p in tmp_path.iterdir() if p.name.startswith(".site")]
