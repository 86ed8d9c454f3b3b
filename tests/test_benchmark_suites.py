"""Suites end to end: perturbation robustness through real runs, a suite killed mid-way and resumed, and `rk bench suite`
on the shipped scenarios with the embedded model (offline), writing the leaderboard and the report."""
import os
import re
import signal
import subprocess
import time
from pathlib import Path

import pandas as pd

from research_kit.benchmark.runs import load_run, run_benchmark
from research_kit.cache import DiskCache
from research_kit.client import InferenceAPI
from research_kit.testing import ScriptedServer

KEY = {"OPENAI_API_KEY": "sk-scripted-server-no-key-needed"}
_SUM = re.compile(r"What\s+is\s+(\d+)\s+([+-])\s+(\d+)\s*\?")


def _right_unless_lowercased(body: dict) -> str:
    "Answers arith's 'What is a + b?' correctly; its lowercased copy 'what is a + b?' always wrongly."
    found = _SUM.findall(body["messages"][-1]["content"])
    if not found: return "no idea"
    a, op, b = found[-1]
    return str(int(a) + int(b) if op == "+" else int(a) - int(b))


def test_a_model_failing_only_on_lowercased_inputs_shows_a_robustness_drop_with_ci_excluding_zero(tmp_path):
    entry = "arith:difficulty=easy,max_train_instances=0,perturbations=lowercase+extra_space"
    with ScriptedServer(reply=_right_unless_lowercased) as srv, InferenceAPI(cache_dir=tmp_path / "cache") as api:
        [out] = run_benchmark([entry], api, tmp_path, models=["openai/scripted"], max_eval_instances=60, progress=False, **srv.params)
        assert out.num_requests == 180 and srv.requests == 180          # 60 originals, 60 lowercased, 60 with extra spaces
    keys = [(s.name, s.split, s.sub_split, s.perturbation) for s in out.stats]
    assert len(keys) == len(set(keys))                                  # one Stat per metric, split and perturbation
    stats = {(s.name, s.perturbation): s for s in out.stats if s.split == "test" and s.sub_split is None}
    assert stats[("exact_match", None)].mean == 1.0                     # right on every original
    assert stats[("exact_match", "extra_space")].mean == 1.0             # and where only spaces were added
    assert stats[("exact_match", "lowercase")].mean == 0.0               # wrong on every lowercased one
    assert stats[("exact_match", "worst")].mean == 0.0
    drop = stats[("exact_match_drop", "worst")]
    assert drop.mean == 1.0 and drop.ci_low > 0 and drop.n == 60
    gap = stats[("exact_match_gap", "lowercase")]
    assert gap.mean == -1.0 and gap.ci_high < 0
    assert stats[("exact_match_gap", "extra_space")].mean == 0.0
    req = load_run(out.run_dir).requests
    assert set(req.perturbation.dropna()) == {"lowercase", "extra_space"}
    lower = req[req.perturbation == "lowercase"]
    assert (lower.input == lower.input.str.lower()).all() and lower.prompt.str.contains("what is").all()


def _cache_entries(path: Path) -> int:
    c = DiskCache(path)
    try: return len(c)
    finally: c.close()


SUITE = """\
name: resumable
models: [openai/model-a, openai/model-b]
max_eval_instances: 30
entries:
  - arith:difficulty=easy
  - arith:difficulty=medium
  - entry: arith:difficulty=hard
    perturbations: lowercase
"""


def test_a_suite_killed_mid_way_resumes_asking_only_for_the_missing_answers(tmp_path, rk):
    (tmp_path / "suite.yaml").write_text(SUITE)
    total = 2 * (30 + 30 + 60)
    with ScriptedServer(reply=_right_unless_lowercased, latency=0.03) as srv:
        args = ["bench", "suite", "suite.yaml", "-o", "out", "--api-base", srv.url, "--n-jobs", "2", "-q"]
        proc = subprocess.Popen([rk.path, *args], cwd=tmp_path, env={**os.environ, **KEY}, stdin=subprocess.DEVNULL,
                                stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True)
        deadline = time.monotonic() + 180
        while srv.requests < total // 2 and time.monotonic() < deadline and proc.poll() is None: time.sleep(0.02)
        os.killpg(proc.pid, signal.SIGKILL); proc.wait()                 # the command and its worker processes
        time.sleep(0.5)
        assert 0 < srv.requests < total, srv.requests
        finished = len(list((tmp_path / "out" / "runs" / "resumable").glob("*/stats.json")))
        assert finished < 6
        answered = _cache_entries(tmp_path / "out" / "cache")
        before = srv.requests
        again = rk(*args, cwd=tmp_path, env=KEY, timeout=300)
        assert again.returncode == 0, again.stderr
        unique = _cache_entries(tmp_path / "out" / "cache")               # every distinct (model, prompt) of the suite, once
        assert total - 10 < unique <= total                               # (a few arith questions recur across difficulties)
        assert srv.requests - before == unique - answered                 # only what the cache did not hold
        assert again.stdout.count("rk: skipped") == finished
        assert again.stdout.count("rk: complete") == 6 - finished
        third = rk(*args, cwd=tmp_path, env=KEY, timeout=300)
        assert third.returncode == 0 and third.stdout.count("rk: skipped") == 6 and srv.requests - before == unique - answered
    root = tmp_path / "out" / "runs" / "resumable"
    assert {"leaderboard.csv", "comparisons.csv", "report.html"} <= {p.name for p in root.iterdir()}
    board = pd.read_csv(root / "leaderboard.csv")
    assert sorted(board.model) == ["openai/model-a", "openai/model-b"]


def test_worker_processes_do_not_outlive_a_suite_killed_alone(tmp_path, rk):
    "kill -9 of `rk` alone (not its process group): its local workers notice and exit, and ask the provider nothing more."
    (tmp_path / "suite.yaml").write_text(SUITE)
    with ScriptedServer(reply=_right_unless_lowercased, latency=0.03) as srv:
        proc = subprocess.Popen([rk.path, "bench", "suite", "suite.yaml", "-o", "out", "--api-base", srv.url, "--n-jobs", "2", "-q"],
                                cwd=tmp_path, env={**os.environ, **KEY}, stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL,
                                stderr=subprocess.DEVNULL, start_new_session=True)
        deadline = time.monotonic() + 120
        while srv.requests < 30 and time.monotonic() < deadline and proc.poll() is None: time.sleep(0.02)
        proc.send_signal(signal.SIGKILL); proc.wait()
        gone = time.monotonic() + 10
        while time.monotonic() < gone:
            try: os.killpg(proc.pid, 0)                                    # anything left of the group?
            except ProcessLookupError: break
            time.sleep(0.2)
        else:
            os.killpg(proc.pid, signal.SIGKILL)
            raise AssertionError("worker processes outlived the killed suite by 10 s")
        after = srv.requests
        time.sleep(1.0)
        assert srv.requests == after < 240


SHIPPED = """\
name: shipped
max_eval_instances: 2
entries:
  - arith:difficulty=easy
  - synthetic_reasoning
  - dyck_language
  - safety_knowledge
  - entry: refusal
    perturbations: lowercase
"""


def test_rk_bench_suite_on_the_shipped_scenarios_runs_offline_on_the_embedded_model_and_writes_the_report(tmp_path, rk):
    (tmp_path / "suite.yaml").write_text(SHIPPED)
    out = rk("bench", "suite", "suite.yaml", "-o", "out", "-q", cwd=tmp_path, timeout=900)
    assert out.returncode == 0, out.stderr
    assert out.stdout.count("rk: complete") == 5, out.stdout
    root = tmp_path / "out" / "runs" / "shipped"
    board = pd.read_csv(root / "leaderboard.csv")
    assert board.model.tolist() == ["local/gemma-3-270m"]
    html = (root / "report.html").read_text()
    assert "refusal" in html and "safety_knowledge" in html and "http://" not in html.replace("http://www.w3.org", "")


def test_a_suite_on_a_dask_cluster_sharing_redis_gives_the_local_results(tmp_path, redis_url):
    from distributed import LocalCluster
    from research_kit.benchmark.suites import Suite, run_suite
    suite = Suite(name="dask", models=("openai/model-a", "openai/model-b"), max_eval_instances=10,
                  entries=("arith:difficulty=easy", "dyck_language"))
    with ScriptedServer(reply=_right_unless_lowercased) as srv:
        with LocalCluster(n_workers=2, threads_per_worker=1, processes=True, host="127.0.0.1", dashboard_address=None) as cluster:
            on_dask = run_suite(suite, tmp_path / "dask", scheduler=cluster.scheduler_address, redis_url=redis_url, progress=False,
                                **srv.params)
        assert on_dask.status.tolist() == ["complete"] * 4 and srv.requests == 40
        local = run_suite(suite, tmp_path / "local", n_jobs=1, redis_url=redis_url, progress=False, **srv.params)
        assert srv.requests == 40 and local.cache_hits.sum() == 40        # the same answers, all from the shared Redis
    for a, b in zip(on_dask.run_dir, local.run_dir):
        assert (Path(a) / "stats.json").read_bytes() == (Path(b) / "stats.json").read_bytes()
