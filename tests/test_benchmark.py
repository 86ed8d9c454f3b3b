"""Benchmarks end to end: a suite against the scripted server (exact requests, rerun from the cache), a run killed
mid-way and resumed (only the missing requests; byte-identical stats.json), the dry run (no calls), a scenario from a
separately installed package (entry points), bad run entries (one `rk: error:` line) and the embedded model offline."""
import json
import os
import signal
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import pytest

from research_kit.benchmark.runs import load_run, load_stats, run_benchmark, stats_frame
from research_kit.cache import DiskCache
from research_kit.client import InferenceAPI
from research_kit.testing import ScriptedServer

KEY = {"OPENAI_API_KEY": "sk-scripted-server-no-key-needed"}


def _reply(body: dict) -> str:
    "A deterministic answer that depends on the prompt: right for some instances, wrong for others."
    return str(len(body["messages"][-1]["content"]) % 7)


def test_three_scenario_suite_makes_exactly_the_expected_requests(tmp_path):
    entries = ["arith:difficulty=easy", "dyck_language", "safety_knowledge"]
    with ScriptedServer(reply=_reply) as srv, InferenceAPI(cache_dir=tmp_path / "cache") as api:
        outs = run_benchmark(entries, api, tmp_path, suite="s", models=["openai/scripted"], max_eval_instances=10,
                             progress=False, **srv.params)
        assert [o.num_requests for o in outs] == [10, 10, 10]
        assert srv.requests == 30                          # one request per eval instance, nothing else
        assert len(srv.by_prompt) == 30                     # thirty different prompts
        assert all(o.num_failed == 0 for o in outs)
        again = run_benchmark(entries, api, tmp_path, suite="s", models=["openai/scripted"], max_eval_instances=10,
                              progress=False, **srv.params)
        assert srv.requests == 30 and [o.model_calls for o in again] == [0, 0, 0]
    stats = load_stats(tmp_path, "s")
    assert set(stats["scenario"]) == {"arith", "dyck_language", "safety_knowledge"}
    means = stats.dropna(subset=["ci_low"])
    assert len(means) and (means["ci_low"] <= means["mean"]).all() and (means["mean"] <= means["ci_high"]).all()
    assert (means["n"] > 0).all()
    run = load_run(outs[0].run_dir)
    assert len(run.requests) == 10 and {"input", "completion", "correct"} <= set(run.requests.columns)
    for f in ("run_spec.json", "scenario_state.json", "stats.json", "per_instance_stats.json"):
        json.loads((outs[0].run_dir / f).read_text())


def _cache_entries(path: Path) -> int:
    c = DiskCache(path)
    try: return len(c)
    finally: c.close()


def test_killed_run_reruns_only_the_missing_requests_and_writes_identical_stats(tmp_path, rk):
    n = 120
    entry = "arith:difficulty=medium,model=openai/scripted"
    with ScriptedServer(reply=_reply, latency=0.05) as srv:
        args = ["bench", "run", "-r", entry, "--max-eval-instances", str(n), "--api-base", srv.url, "-q"]
        env = {**os.environ, **KEY}
        proc = subprocess.Popen([rk.path, *args, "-o", "killed"], cwd=tmp_path, env=env, stdin=subprocess.DEVNULL,
                                stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        deadline = time.monotonic() + 120
        while srv.requests < n // 3 and time.monotonic() < deadline and proc.poll() is None: time.sleep(0.02)
        proc.send_signal(signal.SIGKILL); proc.wait()
        assert 0 < srv.requests < n, srv.requests
        assert not list((tmp_path / "killed").glob("runs/*/*/stats.json"))   # nothing claims to be finished
        answered = _cache_entries(tmp_path / "killed" / "cache")
        assert answered > 0
        before = srv.requests
        rerun = rk(*args, "-o", "killed", cwd=tmp_path, env=KEY, timeout=300)
        assert rerun.returncode == 0, rerun.stderr
        assert srv.requests - before == n - answered          # only what the cache did not hold
        assert f"{n - answered} model calls, {answered} cache hits" in rerun.stdout
        whole = rk(*args, "-o", "whole", cwd=tmp_path, env=KEY, timeout=300)   # the same run, never interrupted
        assert whole.returncode == 0, whole.stderr
    [killed] = (tmp_path / "killed").glob("runs/default/*/stats.json")
    [intact] = (tmp_path / "whole").glob("runs/default/*/stats.json")
    assert killed.read_bytes() == intact.read_bytes()


def test_dry_run_makes_no_calls(tmp_path, rk):
    with ScriptedServer(reply=_reply) as srv:
        out = rk("bench", "run", "-r", "arith:difficulty=easy,model=openai/scripted", "-r", "arith:difficulty=easy,model=openai/gpt-4o-mini",
                 "--max-eval-instances", "50", "--api-base", srv.url, "--dry-run", cwd=tmp_path, env=KEY, timeout=300)
        assert out.returncode == 0, out.stderr
        assert srv.requests == 0
    assert "unknown price" in out.stdout and "prompt_tokens" in out.stdout and "no requests were made" in out.stdout
    assert not (tmp_path / "benchmark_output" / "runs").exists()


TINY = '''
from research_kit.benchmark.scenarios import Scenario
from research_kit.benchmark.specs import CORRECT_TAG, Instance, MetricSpec, Reference

class Echo(Scenario):
    "Repeat a word: a scenario that lives in its own package."
    name = "tiny_echo"
    description = "Repeat the word (from the tiny_scenarios package)."
    def __init__(self, word: str = "apple", count: int = 4): self.word, self.count = word, count
    def get_instances(self):
        return [Instance(input=f"{self.word}{i}", references=(Reference(output=f"{self.word}{i}", tags=(CORRECT_TAG,)),),
                         split="test", id=f"id{i}") for i in range(self.count)]
    def adapter_defaults(self): return {"max_train_instances": 0, "instructions": "Repeat the input.", "max_tokens": 8}
    def metric_specs(self): return [MetricSpec(name="exact_match")]
'''


def test_a_scenario_from_another_installed_package_runs(tmp_path, rk):
    pkg = tmp_path / "tiny_scenarios"
    (pkg / "tiny_scenarios").mkdir(parents=True)
    (pkg / "tiny_scenarios" / "__init__.py").write_text(textwrap.dedent(TINY))
    (pkg / "pyproject.toml").write_text(textwrap.dedent('''
        [build-system]
        requires = ["setuptools"]
        build-backend = "setuptools.build_meta"
        [project]
        name = "tiny-scenarios"
        version = "0.1"
        [project.entry-points."research_kit.scenarios"]
        tiny_echo = "tiny_scenarios:Echo"
    '''))
    site = tmp_path / "site"
    pip = subprocess.run([sys.executable, "-m", "pip", "install", "-q", "--no-deps", "--no-build-isolation", "--no-index",
                          "--target", str(site), str(pkg)], capture_output=True, text=True, timeout=300)
    assert pip.returncode == 0, pip.stderr
    env = {**KEY, "PYTHONPATH": str(site)}
    listed = rk("bench", "list", cwd=tmp_path, env=env)
    assert listed.returncode == 0 and "tiny_echo" in listed.stdout and "tiny-scenarios" in listed.stdout, listed.stdout + listed.stderr
    with ScriptedServer() as srv:   # echoes the prompt's last message: right when the prompt ends with the word
        out = rk("bench", "run", "-r", "tiny_echo:word=pear,count=3,model=openai/scripted", "--api-base", srv.url, "-q",
                 cwd=tmp_path, env=env, timeout=300)
        assert out.returncode == 0, out.stderr
        assert srv.requests == 3
    [stats] = (tmp_path / "benchmark_output").glob("runs/default/tiny_echo*/stats.json")
    assert any(s["name"] == "exact_match" and s["n"] == 3 for s in json.loads(stats.read_text()))


@pytest.mark.parametrize("entry, words", [
    ("arth:difficulty=easy", ["arth", "arith"]),
    ("arith:dificulty=easy", ["dificulty", "difficulty"]),
    ("arith:difficulty=impossible", ["difficulty", "easy"]),
])
def test_bad_run_entry_is_one_error_line(tmp_path, rk, entry, words):
    out = rk("bench", "run", "-r", entry, "--dry-run", cwd=tmp_path)
    assert out.returncode == 2
    assert out.stderr.startswith("rk: error: ") and out.stderr.count("\n") == 1, out.stderr
    assert all(w in out.stderr for w in words), out.stderr


def test_user_file_missing_a_column_names_the_file_and_its_columns(tmp_path, rk):
    (tmp_path / "qa.csv").write_text("question,answer\nWhat is 1+1?,2\n")
    out = rk("bench", "run", "-r", "user_data:path=qa.csv,input=prompt,output=answer", "--dry-run", cwd=tmp_path)
    assert out.returncode == 2 and out.stderr.count("\n") == 1, out.stderr
    assert all(w in out.stderr for w in ("qa.csv", "prompt", "question")), out.stderr


def test_embedded_model_offline_and_a_cached_rerun_without_litellm(tmp_path, rk):
    args = ["bench", "run", "-r", "arith:difficulty=easy", "-r", "safety_knowledge", "--max-eval-instances", "3", "-q"]
    first = rk(*args, cwd=tmp_path, timeout=600)
    assert first.returncode == 0, first.stderr
    assert "6 requests" not in first.stdout and first.stdout.count("3 requests, 3 model calls") == 2, first.stdout
    code = ("import sys; from research_kit.cli import main; rc = main(%r); "
            "print('litellm imported' if 'litellm' in sys.modules else 'no litellm'); sys.exit(rc)" % args)
    again = subprocess.run([sys.executable, "-c", code], cwd=tmp_path, capture_output=True, text=True, timeout=300)
    assert again.returncode == 0, again.stderr
    assert again.stdout.count("0 model calls, 3 cache hits") == 2 and "no litellm" in again.stdout, again.stdout


def test_more_eval_instances_asked_than_exist_uses_all_and_says_so(tmp_path, rk):
    (tmp_path / "qa.csv").write_text("question,answer\nWhat is 1+1?,2\nWhat is 2+2?,4\nWhat is 3+3?,6\n")
    with ScriptedServer(reply=_reply) as srv:
        out = rk("bench", "run", "-r", "user_data:path=qa.csv,input=question,output=answer,model=openai/scripted",
                 "--max-eval-instances", "10", "--api-base", srv.url, "-q", cwd=tmp_path, env=KEY, timeout=300)
        assert out.returncode == 0, out.stderr
        assert srv.requests == 3
    assert "3 requests" in out.stdout and "note: max_eval_instances=10" in out.stdout and "all 3 are used" in out.stdout, out.stdout


def test_rk_run_benchmark_notebook_offline_on_the_embedded_model(tmp_path, rk):
    out = rk("run", "benchmark", "-p", "max_eval_instances", "2", "-o", "bench", cwd=tmp_path, timeout=600)
    assert out.returncode == 0, out.stderr
    exp = tmp_path / "bench"
    import pandas as pd
    stats = pd.read_csv(exp / "results" / "stats.csv")
    main = stats[stats["name"].isin(["exact_match", "multiple_choice_accuracy"]) & stats["sub_split"].isna()]
    assert len(main) == 2 and (main["n"] == 2).all() and main["ci_high"].gt(main["ci_low"]).all()
    assert (exp / "plots" / "main_metrics.png").stat().st_size > 10_000
    assert len(list(exp.glob("runs/experiment/*/stats.json"))) == 2


def test_output_into_a_closed_pipe_is_not_an_error(tmp_path, rk):
    "`rk bench list | head -1`: once the reader has gone, rk stops quietly (here the reader is gone from the start)."
    r, w = os.pipe()
    os.close(r)
    try:
        out = subprocess.run([rk.path, "bench", "list"], stdout=w, stderr=subprocess.PIPE, text=True, cwd=tmp_path, timeout=120,
                             env={**os.environ, "PYTHONUNBUFFERED": "1"}, stdin=subprocess.DEVNULL)
    finally:
        os.close(w)
    assert (out.returncode, out.stderr) == (0, "")
