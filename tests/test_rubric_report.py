"""The rubric report in a browser, and two runs compared.

A small run written by hand in the contract's tables (two lessons: a grader that mostly agrees with the humans and one
that labels at random; a student whose code, observations and reason hold `</td><script>alert(1)</script>`), its
metrics from research_kit.rubric.agreement, the report written with `write_report` and opened from file:// in headless
Chromium (Debian's, through Playwright's `executable_path`). No dialog, no script element, no console or page error, no
request leaving file://; the markup is visible as text; the random grader's concepts are called chance.
Screenshots go to _rubric_screenshots/. `compare_outputs` is checked against differences worked out by hand.

Bounded: every wait has a timeout (WAIT_MS); the file takes well under 30 s.
"""
import io
import json
import re
from collections import Counter
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from research_kit.rubric.agreement import agreement
from research_kit.rubric.data import Dataset, Experiment, LabelSet, Params
from research_kit.rubric.report import compare_html, compare_outputs, format_compare, report_html, write_report

from conftest import open_page, screenshot_dir

WAIT_MS = 15_000
XSS = "</td><script>alert(1)</script>"
L = LabelSet()
CONCEPTS = {"good": ["Sprites", "Loops"], "random": ["Variables", "Events"]}
STUDENTS = [f"student_{i}" for i in range(1, 21)]


def _tables():
    "predictions and gradings of a run: lesson 'good' grades near the human label, 'random' at random; student_3 holds the markup."
    rng, rows = np.random.default_rng(1), []
    for lesson, concepts in CONCEPTS.items():
        for s in STUDENTS:
            for c in concepts:
                actual = L.labels[rng.integers(4)]
                pred = L.labels[rng.integers(4)] if lesson == "random" else actual if rng.random() < 0.8 else L.labels[min(L.rank(actual) + 1, 3)]
                votes = Counter([pred, pred, L.labels[rng.integers(4)]])
                words = XSS if s == "student_3" else f"{c} seen"
                rows.append(dict(lesson=lesson, student=s, concept=c, predicted=pred, actual=actual, actual_2=actual, votes=json.dumps(votes),
                                 n_votes=3, agree_votes=votes[pred], split=len(votes) > 1, observations=words, reason=words, status="ok"))
    pred = pd.DataFrame(rows)
    failed = (pred.student == "student_9") & (pred.lesson == "good")
    pred.loc[failed, ["predicted", "votes", "observations", "reason", "status"]] = [None, "{}", "", "", "invalid"]
    pred.loc[failed, ["n_votes", "agree_votes"]] = 0
    grad = pd.DataFrame([dict(lesson=l, student=s, status="invalid" if (l, s) == ("good", "student_9") else "ok", n_requested=3, n_valid=3,
                              n_invalid=0, n_too_large=0, prompt_tokens=1000, completion_tokens=200, cost_usd=0.001, cached=False, latency_s=1.0,
                              error=None) for l in CONCEPTS for s in STUDENTS])
    return pred, grad


def _experiment(lesson):
    rubric = "Key Concept,Instructions," + ",".join(L.labels) + "\n" + "".join(f"{c},{XSS},a,b,c,d\n" for c in CONCEPTS[lesson])
    return Experiment(name="exp", lesson=lesson, path=f"experiments/exp/{lesson}", params=Params(model="openai/gpt-4o-mini", num_responses=3),
                      system_prompt=f"Grade this. {XSS}", rubric=rubric, rubric_table=pd.read_csv(io.StringIO(rubric)), concepts=CONCEPTS[lesson],
                      examples=[], confidence=None)


def _dataset(lesson, pred):
    labels = pred[pred.lesson == lesson].pivot(index="student", columns="concept", values="actual")
    return Dataset(name="data", lesson=lesson, path=f"datasets/data/{lesson}", artifacts={s: (XSS if s == "student_3" else "") + f"var {s} = 1;" for s in STUDENTS},
                   files={s: f"{s}.js" for s in STUDENTS}, labels=labels, labels_2=labels)


@pytest.fixture(scope="module")
def tables():
    pred, grad = _tables()
    return pred, grad, agreement(pred, n_resamples=200)


@pytest.fixture(scope="module")
def report(tmp_path_factory, tables):
    out = tmp_path_factory.mktemp("out")
    pred, grad, metrics = tables
    path = write_report(out, predictions=pred, gradings=grad, metrics=metrics, experiments={l: _experiment(l) for l in CONCEPTS},
                        datasets={l: _dataset(l, pred) for l in CONCEPTS}, info={"dataset": "data", "experiment": "exp", "note": XSS})
    return path


@pytest.fixture(scope="module")
def shots():
    return screenshot_dir("_rubric_screenshots")


def test_report_file_is_self_contained(report):
    html = report.read_text(encoding="utf-8")
    assert not re.search(r'(src|href)\s*=\s*"?(https?:)?//', html) and "@import" not in html and "url(" not in html
    assert XSS not in html and "<script" not in html and html.count("&lt;/td&gt;&lt;script&gt;alert(1)&lt;/script&gt;") >= 6
    assert "default-src 'none'" in html
    plots = sorted(p.name for p in (report.parent / "plots").iterdir())
    assert plots == sorted(f"{l}_{k}.png" for l in CONCEPTS for k in ("qwk", "exact_accuracy", "confusion_exact", "confusion_pass_fail"))
    assert html.count('src="data:image/png;base64,') == len(plots)


def test_report_in_chromium(report, chromium, shots):
    pg = open_page(chromium, report.as_uri(), timeout_ms=WAIT_MS)
    dialogs = []
    pg.on("dialog", lambda d: (dialogs.append(d.message), d.dismiss()))
    try:
        pg.screenshot(path=str(shots / "rubric_top.png"), full_page=False)
        summary = pg.inner_text("#summary")
        for c in CONCEPTS["random"]: assert re.search(rf"random · {c}: agreement is indistinguishable from chance", summary), summary
        for c in CONCEPTS["good"]: assert re.search(rf"good · {c}: agreement above chance", summary), summary
        assert pg.locator("script").count() == 0
        pg.locator("#lesson-good h3", has_text="Students").evaluate("h => h.scrollIntoView({block: 'start'})")
        cells = pg.eval_on_selector_all("#lesson-good table.students td.cell", "tds => tds.map(t => t.className)")
        assert {"cell exact", "cell off1", "cell none"} <= set(cells), set(cells)
        pg.screenshot(path=str(shots / "rubric_students.png"), full_page=False)
        row = pg.locator("#lesson-good tr.more details", has_text="student_3:")
        row.locator("summary").click()
        assert XSS in row.inner_text() and row.locator("pre.code").is_visible() and XSS in row.locator("pre.code").inner_text()
        assert row.locator("td.text", has_text=XSS).count() == 4   # observations and reason of two concepts
        titles = pg.eval_on_selector_all("#lesson-good td.cell", "tds => tds.map(t => t.title)")
        assert any(f"observations: {XSS}" in t for t in titles)
        assert XSS in pg.inner_text("#lesson-good pre.prompt") and XSS in pg.inner_text("#lesson-good table.rubric")
        pg.locator("#lesson-good tr.student", has_text="student_3").evaluate("tr => tr.scrollIntoView({block: 'center'})")
        pg.screenshot(path=str(shots / "rubric_student_details.png"), full_page=False)
        pg.screenshot(path=str(shots / "rubric_full.png"), full_page=True)
        assert pg.evaluate("document.querySelectorAll('script').length") == 0
    finally:
        pg.close()
    assert not dialogs, f"a dialog fired: {dialogs}"
    assert not pg.errors, pg.errors
    assert not pg.outside, f"requests that left file://: {pg.outside}"


def test_no_dataset_no_code(tables):
    pred, grad, metrics = tables
    html = report_html(predictions=pred[pred.lesson == "good"], gradings=grad[grad.lesson == "good"], metrics=metrics[metrics.lesson == "good"],
                       experiments={"good": _experiment("good")})
    assert 'class="code"' not in html and "student_3" in html


def _output(path: Path, dataset: str, experiment: str, ranks: list[int], extra: bool = False) -> Path:
    "An output dir over lesson L1: 20 items, actual rank i % 4, concept C1/C2 alternating, predicted ranks as given."
    path.mkdir()
    rows = [dict(lesson="L1", student=f"s{i // 2}", concept=f"C{i % 2 + 1}", predicted=L.labels[r], actual=L.labels[i % 4]) for i, r in enumerate(ranks)]
    rows.append(dict(lesson="L1", student="s99", concept="C1", predicted=L.labels[0], actual=None))       # no human label: left out
    if extra: rows.append(dict(lesson="L1", student="s50", concept="C1", predicted=L.labels[0], actual=L.labels[0]))  # only in this run
    pd.DataFrame(rows).assign(actual_2=None, votes="{}", n_votes=1, agree_votes=1, split=False, observations="", reason="", status="ok") \
        .to_csv(path / "predictions.csv", index=False)
    (path / "rubric_run.json").write_text(json.dumps({"dataset": dataset, "experiment": experiment}))
    return path


def _wrong(r: int) -> int: return {0: 1, 1: 2, 2: 1, 3: 2}[r]   # one rank off: 0->1 and 3->2 keep pass/fail, 1->2 and 2->1 flip it


def test_compare_outputs(tmp_path):
    actual = [i % 4 for i in range(20)]
    a = [r if i < 10 else _wrong(r) for i, r in enumerate(actual)]                          # exact on 0-9
    b = [r if i not in (8, 9, 18, 19) else _wrong(r) for i, r in enumerate(actual)]         # exact on all but 8, 9, 18, 19
    df = compare_outputs(_output(tmp_path / "a", "data", "exp-a", a, extra=True), _output(tmp_path / "b", "data", "exp-b", b))
    pooled = df[(df.lesson == "L1") & (df.concept == "(all)")].set_index("metric")
    assert list(dict.fromkeys(df.concept)) == ["C1", "C2", "(all)"] and set(pooled.n) == {20}
    assert set(df[df.concept != "(all)"].n) == {10}
    ex = pooled.loc["exact_accuracy"]
    # exact: A 10/20, B 16/20; discordant pairs 2 (A right only: 8, 9) and 8 (B right only: 10-17): p = 2 * P(X <= 2 | 10, 1/2)
    assert (ex.a, ex.b, ex["diff"]) == (0.5, 0.8, pytest.approx(0.3)) and ex.p_value == pytest.approx(2 * (1 + 10 + 45) / 1024)
    assert ex.ci_low < 0.3 < ex.ci_high and ex.test == "mcnemar-exact"
    pf = pooled.loc["pass_fail_accuracy"]
    # pass/fail: A flips 10, 13, 14, 17, 18 (15/20); B flips 9, 18 (18/20); discordant 4 for B, 1 for A
    assert (pf.a, pf.b, pf["diff"]) == (0.75, 0.9, pytest.approx(0.15)) and pf.p_value == pytest.approx(2 * (1 + 5) / 32)
    d = pooled.loc["mean_rank_distance"]
    assert (d.a, d.b, d["diff"]) == (0.5, 0.2, pytest.approx(-0.3)) and d.ci_low < -0.3 < d.ci_high <= 0 and d.test == "paired-bootstrap"
    from sklearn.metrics import cohen_kappa_score
    q = pooled.loc["qwk"]
    assert q.a == pytest.approx(cohen_kappa_score(actual, a, weights="quadratic")) and q.b == pytest.approx(cohen_kappa_score(actual, b, weights="quadratic"))
    assert q.a_ci_low < q.a < q.a_ci_high and q.b_ci_low <= q.b <= q.b_ci_high and pd.isna(q.p_value)
    text = format_compare(df)
    assert text.splitlines()[0] == "A: exp-a   B: exp-b   dataset: data" and "0.30 [" in text and "0.109" in text


def test_compare_html(tmp_path, chromium, shots):
    actual = [i % 4 for i in range(20)]
    df = compare_outputs(_output(tmp_path / "a", "data", XSS, [_wrong(r) for r in actual]), _output(tmp_path / "b", "data", "exp-b", actual))
    html = compare_html(df)
    assert XSS not in html and "<script" not in html and not re.search(r'(src|href)\s*=\s*"?(https?:)?//', html)
    page = tmp_path / "compare.html"
    page.write_text(html, encoding="utf-8")
    pg = open_page(chromium, page.as_uri(), timeout_ms=WAIT_MS)
    try:
        assert XSS in pg.inner_text("header") and pg.locator("table.compare tr.sig").count() >= 3
        pg.screenshot(path=str(shots / "rubric_compare.png"), full_page=True)
    finally:
        pg.close()
    assert not pg.errors and not pg.outside, (pg.errors, pg.outside)


def test_compare_errors(tmp_path):
    a = _output(tmp_path / "a", "data-1", "x", [0] * 20)
    with pytest.raises(ValueError, match=r"a/rubric_run.json has dataset 'data-1' but .*b/rubric_run.json has 'data-2'"):
        compare_outputs(a, _output(tmp_path / "b", "data-2", "y", [0] * 20))
    other = tmp_path / "c"
    other.mkdir()
    pd.DataFrame([dict(lesson="L2", student="z", concept="C1", predicted=L.labels[0], actual=L.labels[0])]).to_csv(other / "predictions.csv", index=False)
    (other / "rubric_run.json").write_text(json.dumps({"dataset": "data-1"}))
    with pytest.raises(ValueError, match="no \\(lesson, student, concept\\) that both graded"): compare_outputs(a, other)
    with pytest.raises(FileNotFoundError, match="rubric_run.json does not exist"): compare_outputs(a, tmp_path)
