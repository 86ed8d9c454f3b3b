"""Benchmarks II figures: summarize + report for a suite of 20 runs x 1,000 instances (target < 10 s), the report's
first screen in headless Chromium (target < 2 s), and the drill-down of a 10,000-instance run (page, sort, filter).

The runs are written by research_kit's own writer (adapter, metrics, files) from scripted answers, so the files are
exactly what `rk bench suite` writes; only the model calls are skipped. Run: .venv/bin/python tests/bench_suite.py"""
import json
import random
import sys
import tempfile
import time
from pathlib import Path

from research_kit.benchmark.adapters import adapt
from research_kit.benchmark.metrics import compute_stats
from research_kit.benchmark.runs import _instances, _write_run, run_specs_for
from research_kit.benchmark.specs import run_dir_name
from research_kit.messages import LLMResponse

MODELS = {"openai/strong": 0.80, "openai/good": 0.74, "openai/fair": 0.72, "openai/weak": 0.55}  # accuracy per model
ENTRIES = 5


def _dataset(path: Path, n: int, seed: int) -> Path:
    rng = random.Random(seed)
    rows = [{"id": f"q{i}", "question": f"Question {i}: what is {rng.randint(1, 99)} plus {rng.randint(1, 99)}? " + "Context. " * 20,
             "answer": str(i % 97)} for i in range(n)]
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    return path


def write_runs(out: Path, suite: str, n: int, models=MODELS, entries=ENTRIES) -> float:
    "Write len(models) x entries runs of n instances each; a model answers right with its accuracy (seeded per instance)."
    t0 = time.perf_counter()
    out.mkdir(parents=True, exist_ok=True)
    for e in range(entries):
        data = _dataset(out / f"data{e}.jsonl", n, e)
        entry = f"user_data:path={data},input=question,output=answer,id=id"
        for model, acc in models.items():
            [spec] = run_specs_for(entry, [model])
            states = adapt(_instances(spec), spec.adapter_spec).request_states
            done = []
            for s in states:
                right = random.Random(f"{model}:{e}:{s.instance.id}").random() < acc
                text = s.instance.first_correct_reference.output if right else "wrong <b>answer</b>"
                r = LLMResponse(model_id=model, completion=text, finish_reason="stop", prompt_tokens=60, completion_tokens=2, cost=1e-5)
                done.append(s.model_copy(update={"result": (r,)}))
            per_instance, stats = compute_stats(done, spec.metric_specs, seed=0)
            _write_run(out / "runs" / suite / run_dir_name(spec.name), spec, done, per_instance, stats)
    return time.perf_counter() - t0


def _browser(p):
    return p.chromium.launch(executable_path="/usr/bin/chromium", args=["--no-sandbox", "--disable-gpu"], headless=True, timeout=60_000)


def first_screen_s(report: Path) -> tuple[float, float, float]:
    "Seconds from navigation to the leaderboard on screen, to the load event, to the first page of instances (median of 3)."
    from playwright.sync_api import sync_playwright
    board, loads, rows = [], [], []
    with sync_playwright() as p:
        browser = _browser(p)
        for _ in range(3):
            page = browser.new_page(viewport={"width": 1400, "height": 900})
            t0 = time.perf_counter()
            page.goto(report.as_uri(), wait_until="commit")
            page.wait_for_selector("#leaderboard table", state="visible", timeout=20_000)
            board.append(time.perf_counter() - t0)
            page.wait_for_load_state("load")
            loads.append(time.perf_counter() - t0)
            page.wait_for_selector("#inst-body tr", timeout=20_000)
            rows.append(time.perf_counter() - t0)
            page.close()
        browser.close()
    return sorted(board)[1], sorted(loads)[1], sorted(rows)[1]


def _until_changed(page, js: str, before: str, timeout_ms: int = 20_000):
    page.wait_for_function(f"(before) => ({js}) !== before", arg=before, timeout=timeout_ms)


def drill_down_s(report: Path) -> dict:
    "Seconds for the drill-down of a 10,000-instance run: the next page, a sort by input, a text filter."
    from playwright.sync_api import sync_playwright
    first_row, status = "document.querySelector('#inst-body tr').textContent", "document.querySelector('#page-status').textContent"
    out = {}
    with sync_playwright() as p:
        browser = _browser(p)
        page = browser.new_page(viewport={"width": 1400, "height": 900})
        page.goto(report.as_uri(), wait_until="load")
        page.wait_for_selector("#inst-body tr", timeout=20_000)
        for name, act, probe in [("next page", lambda: page.click("#next"), status),
                                 ("sort by input", lambda: page.click("#inst-head th:has-text('input')"), first_row),
                                 ("filter 'Question 77'", lambda: page.fill("#f-text", "Question 77"), status)]:
            before = page.evaluate(f"() => {probe}")
            t0 = time.perf_counter()
            act()
            _until_changed(page, probe, before)
            out[name] = time.perf_counter() - t0
        out["rows after filter"] = page.evaluate(f"() => {status}")
        browser.close()
    return out


def main() -> int:
    from research_kit.benchmark.suites import summarize_suite
    with tempfile.TemporaryDirectory() as d:
        out = Path(d)
        setup = write_runs(out, "big", 1000)
        print(f"setup: 20 runs x 1,000 instances written in {setup:.1f} s (not timed below)")
        t0 = time.perf_counter()
        from research_kit.benchmark.compare import leaderboard
        lb = leaderboard(out / "runs" / "big")
        t_lb = time.perf_counter() - t0
        t0 = time.perf_counter()
        summarize_suite(out / "runs" / "big")
        t_sum = time.perf_counter() - t0
        report = out / "runs" / "big" / "report.html"
        print(f"leaderboard alone: {t_lb:.2f} s; summarize + report (leaderboard.csv, comparisons.csv, report.html "
              f"{report.stat().st_size / 1e6:.1f} MB): {t_sum:.2f} s  (target < 10 s: {'met' if t_sum < 10 else 'MISSED'})")
        print(lb.table[["rank", "tie_group", "model", "mean_win_rate"]].to_string(index=False))
        shown, loaded, rows = first_screen_s(report)
        print(f"report first screen in Chromium: {shown:.2f} s to the leaderboard, {loaded:.2f} s to the load event, "
              f"{rows:.2f} s to the first page of instances (target < 2 s: {'met' if max(shown, loaded) < 2 else 'MISSED'})")
        big = out / "big10k"
        write_runs(big, "ten", 10_000, models={"openai/strong": 0.8, "openai/weak": 0.6}, entries=1)
        t0 = time.perf_counter()
        summarize_suite(big / "runs" / "ten")
        print(f"10,000 instances x 2 runs: summarize + report {time.perf_counter() - t0:.2f} s")
        times = drill_down_s(big / "runs" / "ten" / "report.html")
        print("drill-down at 10,000 instances: " + ", ".join(f"{k} {v * 1000:.0f} ms" if isinstance(v, float) else f"{k}: {v}"
                                                             for k, v in times.items()))
        return 0 if t_sum < 10 and max(shown, loaded) < 2 else 1


if __name__ == "__main__":
    sys.exit(main())
