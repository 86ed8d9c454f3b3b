"""The benchmark report in a browser: a small suite of real runs (two scripted models, one completion that is a
`<script>`) and a 10,000-instance run written in the run-directory layout, each written with `write_report` and
opened from file:// in headless Chromium (Debian's, through Playwright's `executable_path`: nothing is downloaded).
No console or page error, no request leaving file://, the `<script>` completion shows as text and never runs,
sorting reorders, the pager moves, the big run's first page renders. Screenshots go to _report_screenshots/.

Bounded: every wait has a timeout (WAIT_MS); the whole file takes well under a minute.
"""
import re
import shutil
import time
from pathlib import Path

import pandas as pd
import pytest

from research_kit.benchmark.report import report_html, write_report
from research_kit.benchmark.runs import load_run, run_benchmark
from research_kit.client import InferenceAPI
from research_kit.testing import ScriptedServer

from conftest import open_page, screenshot_dir

ROOT = Path(__file__).resolve().parent.parent
WAIT_MS = 15_000
XSS = "<script>window.__xss=1</script>"
BIG = 10_000


def _reply(body: dict) -> str:
    "model-a does the sums; model-b gets those starting with a multiple of 3 wrong, answering with markup."
    qs = re.findall(r"What is (\d+) ([-+]) (\d+)\?", body["messages"][-1]["content"])
    if not qs: return "A" if body["model"].endswith("a") else "B"
    a, op, b = qs[-1]
    if body["model"].endswith("b") and int(a) % 3 == 0: return XSS
    return str(int(a) + int(b) if op == "+" else int(a) - int(b))


@pytest.fixture(scope="module")
def suite(tmp_path_factory):
    out = tmp_path_factory.mktemp("suite")
    with ScriptedServer(reply=_reply) as srv, InferenceAPI(cache_dir=out / "cache") as api:
        run_benchmark(["arith:difficulty=easy", "safety_knowledge"], api, out, suite="s", models=["openai/model-a", "openai/model-b"],
                      max_eval_instances=60, progress=False, **srv.params)
    return out


def _big_run(suite: Path, dest: Path) -> Path:
    "A run of BIG instances (half of them lowercased copies) written straight into the run-directory layout."
    src = next((suite / "runs" / "s").glob("arith*model-a"))
    run = dest / "runs" / "big" / src.name
    run.mkdir(parents=True)
    for f in ("run_spec.json", "stats.json"): shutil.copy(src / f, run / f)
    spec = load_run(src).run_spec
    i = pd.RangeIndex(BIG)
    a, b, pert = i % 10, (i * 7) % 10, ["lowercase" if k % 2 else None for k in i]
    right = (i % 5 != 0).astype(float)
    req = pd.DataFrame({"run": spec.name, "scenario": "arith", "model": spec.adapter_spec.model, "instance_id": [f"id{k // 2}" for k in i],
                        "perturbation": pert, "split": "test", "sub_split": None, "train_trial_index": 0, "num_train_instances": 5,
                        "prompt_truncated": False, "prompt": [("Question: What is 1 + 1?\nAnswer: 2\n\n" * 12) + f"Question: What is {x} + {y}?\nAnswer:"
                                                             for x, y in zip(a, b)],
                        "input": [f"What is {x} + {y}?" for x, y in zip(a, b)], "references": [[f"{x + y} (correct)"] for x, y in zip(a, b)],
                        "correct": [str(x + y) for x, y in zip(a, b)], "completion": [str(x + y) if r else "0" for x, y, r in zip(a, b, right)],
                        "output": None, "error": None, "prompt_tokens": 200, "completion_tokens": 1, "cost_usd": 0.0, "cached": False,
                        "exact_match": right})
    req["output"] = req["completion"]
    req.to_parquet(run / "requests.parquet", index=False)
    stats = pd.DataFrame([{"run": spec.name, "scenario": "arith", "model": spec.adapter_spec.model, "name": n, "split": "test", "sub_split": None,
                           "perturbation": p, "n": BIG // 2, "mean": m, "stderr": 0.01, "ci_low": m - 0.02, "ci_high": m + 0.02, "method": "wilson"}
                          for n, p, m in [("exact_match", None, 0.8), ("exact_match", "lowercase", 0.8), ("exact_match", "worst", 0.7),
                                          ("exact_match_drop", "worst", 0.1)]])
    stats.to_parquet(run / "stats.parquet", index=False)
    return run


@pytest.fixture(scope="module")
def reports(suite, tmp_path_factory):
    big = tmp_path_factory.mktemp("big")
    _big_run(suite, big)
    t0 = time.perf_counter()
    small = write_report(suite, page_size=25)
    t_small = time.perf_counter() - t0
    return {"small": small, "big": write_report(big), "t_small": t_small}


@pytest.fixture(scope="module")
def shots():
    return screenshot_dir("_report_screenshots")


def _open(browser, path: Path):
    "A page on the report with its errors and any request that is not file:// or data: recorded."
    t0 = time.perf_counter()
    pg = open_page(browser, path.as_uri(), timeout_ms=WAIT_MS)
    pg.wait_for_selector("#inst-body tr", timeout=WAIT_MS)
    pg.first_screen_s = time.perf_counter() - t0
    return pg


def _column(pg, k: int) -> list[str]:
    return pg.eval_on_selector_all("#inst-body tr", f"trs => trs.map(tr => tr.children[{k}].textContent)")


def _status(pg) -> str: return pg.inner_text("#page-status")


def test_report_file_is_self_contained(reports):
    html = reports["small"].read_text(encoding="utf-8")
    assert reports["small"].name == "report.html" and reports["t_small"] < 30
    assert XSS not in html and "\\u003cscript>window.__xss=1" in html            # escaped inside its JSON tag
    assert not re.search(r'(src|href)\s*=\s*"(https?:)?//', html) and "@import" not in html and "url(" not in html
    assert html.count('<script type="application/json" id="run-data-') == 4
    assert html.count('src="data:image/png;base64,') == 1                        # both entries' CIs in one figure


def test_report_in_chromium(reports, chromium, shots):
    pg = _open(chromium, reports["small"])
    try:
        assert "Leaderboard" in pg.inner_text("#leaderboard") and pg.locator("table.board tbody tr").count() == 2
        pg.screenshot(path=str(shots / "report_top.png"), full_page=False)
        # the run of model-b on arith holds the <script> completion: find it with the filter box
        label = next(o for o in pg.eval_on_selector_all("#run-select option", "os => os.map(o => o.textContent)") if o.startswith("arith") and "model-b" in o)
        pg.select_option("#run-select", label=label)
        pg.fill("#f-text", "__xss")
        pg.wait_for_function("() => document.getElementById('page-status').textContent.includes(' of 60 rows') && "
                             "!document.getElementById('page-status').textContent.startsWith('page 1 of 1 \u00b7 60')", timeout=WAIT_MS)
        body = pg.inner_text("#inst-body")
        assert XSS in body, body[:500]
        assert pg.evaluate("window.__xss") is None and pg.locator("#inst-body script").count() == 0
        pg.click("#inst-body tr >> nth=0")
        pg.wait_for_function("() => document.getElementById('detail').textContent.includes('__xss')", timeout=WAIT_MS)
        assert XSS in pg.inner_text("#detail") and pg.is_visible("#detail")
        pg.screenshot(path=str(shots / "report_xss_as_text.png"), full_page=True)

        # sorting: by input, then the other way round
        pg.fill("#f-text", "")
        pg.wait_for_function("() => document.getElementById('page-status').textContent.includes('60 of 60 rows')", timeout=WAIT_MS)
        heads = pg.eval_on_selector_all("#inst-head th", "ths => ths.map(t => t.textContent)")
        k = heads.index("input")
        before = _column(pg, k)
        pg.click(f"#inst-head th >> nth={k}")
        asc = _column(pg, k)
        pg.click(f"#inst-head th >> nth={k}")
        desc = _column(pg, k)
        assert asc != before and asc == sorted(asc) and desc == sorted(desc, reverse=True) and asc != desc

        # the pager: 60 rows, 25 a page
        assert _status(pg).startswith("page 1 of 3")
        first = _column(pg, 0)
        pg.click("#next")
        assert _status(pg).startswith("page 2 of 3") and _column(pg, 0) != first
        pg.click("#next")
        assert _status(pg).startswith("page 3 of 3") and len(_column(pg, 0)) == 10 and pg.is_disabled("#next")
        pg.click("#prev")
        assert _status(pg).startswith("page 2 of 3")

        # correct-or-not: model-b is wrong on a third of the sums, each of them the markup answer
        pg.select_option("#f-correct", "incorrect")
        pg.wait_for_function("() => document.getElementById('page-status').textContent.startsWith('page 1 of')", timeout=WAIT_MS)
        wrong = int(re.search(r"(\d+) of 60 rows", _status(pg)).group(1))
        assert 0 < wrong < 60 and set(_column(pg, heads.index("completion"))) == {XSS}
        pg.screenshot(path=str(shots / "report_full.png"), full_page=True)
    finally:
        pg.close()
    assert not pg.errors, pg.errors
    assert not pg.outside, f"requests that left file://: {pg.outside}"


def test_ten_thousand_instances(reports, chromium, shots):
    size_mb = reports["big"].stat().st_size / 1e6
    pg = _open(chromium, reports["big"])
    try:
        assert pg.locator("#inst-body tr").count() == 50
        assert "of 10000 rows" in _status(pg) and _status(pg).startswith("page 1 of 200")
        assert "Robustness" in pg.inner_text("#robustness") and "worst" in pg.inner_text("#robustness table")
        pg.select_option("#f-pert", "lowercase")
        pg.wait_for_function("() => document.getElementById('page-status').textContent.includes('5000 of 10000 rows')", timeout=WAIT_MS)
        heads = pg.eval_on_selector_all("#inst-head th", "ths => ths.map(t => t.textContent)")
        t0 = time.perf_counter()
        pg.click(f"#inst-head th >> nth={heads.index('exact_match')}")
        assert set(_column(pg, heads.index("exact_match"))) == {"0"}
        sort_s = time.perf_counter() - t0
        pg.screenshot(path=str(shots / "report_10000.png"), full_page=False)
    finally:
        pg.close()
    print(f"10,000-instance report: {size_mb:.1f} MB, first page in {pg.first_screen_s:.2f}s, sort of 5,000 rows {sort_s:.2f}s")
    assert not pg.errors, pg.errors
    assert not pg.outside, pg.outside
    assert pg.first_screen_s < 10 and sort_s < 5


def test_bad_sources(tmp_path):
    with pytest.raises(FileNotFoundError, match="no finished run here"): report_html(tmp_path)
    with pytest.raises(ValueError, match="no runs given"): report_html([])
