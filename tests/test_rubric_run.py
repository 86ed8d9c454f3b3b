"""Rubric runs end to end against a ScriptedServer playing the grader: a directory in code.org's layout (their params
keys, string values, TSV answers with a Grade column, alphabetical label columns) runs unchanged; a release runs as an
experiment; `rk rubric run` killed mid-way and rerun asks only for the missing answers; the gate's exit code;
`rk rubric compare`. Bounded: every server answers at once or after a fixed latency; the subprocess has a timeout."""
import csv
import hashlib
import io
import json
import os
import signal
import subprocess
import time
from pathlib import Path

import pandas as pd

from research_kit.cache import DiskCache
from research_kit.cli import main
from research_kit.client import InferenceAPI
from research_kit.rubric.data import DEFAULT_LABELS, example_root, load_dataset
from research_kit.rubric.run import run_rubric
from research_kit.testing import ScriptedServer

CODEORG = Path(__file__).parent / "data" / "rubric_codeorg"
KEY = {"OPENAI_API_KEY": "sk-scripted-server-no-key-needed"}


def _concepts(body: dict) -> list[str]:
    return [r["Key Concept"] for r in csv.DictReader(io.StringIO(body["messages"][0]["content"].split("Rubric:\n", 1)[1]))]


def _hash_label(*parts) -> str:
    return DEFAULT_LABELS[int(hashlib.sha256("|".join(map(str, parts)).encode()).hexdigest(), 16) % 4]


def _tsv_grader(body: dict) -> str:
    "code.org's TSV answer with their 'Grade' column, after a line of chatter; the label hashed from code and choice."
    code = body["messages"][-1]["content"]
    rows = [f"{c}\tlooked at {len(code)} characters\t{_hash_label(c, code, body['_choice'])}\tbecause" for c in _concepts(body)]
    return "Here is the evaluation:\nKey Concept\tObservations\tGrade\tReason\n" + "\n".join(rows)


def _json_grader(body: dict) -> str:
    code = body["messages"][-1]["content"]
    return json.dumps([{"Key Concept": c, "Observations": "o", "Label": _hash_label(c, code), "Reason": "r"} for c in _concepts(body)])


def test_a_codeorg_directory_runs_unchanged(tmp_path):
    with ScriptedServer(reply=_tsv_grader) as srv, InferenceAPI(cache_dir=tmp_path / "cache") as api:
        run = run_rubric(CODEORG, "contractor-grades-sample", "ai-rubrics-baseline", tmp_path / "out", api=api, progress=False,
                         **srv.params)
        bodies = list(srv.bodies)
        assert srv.requests == 5                                  # 6 students; student_3 is only a comment: blank, no request
    assert all(b["model"] == "gpt-4-0613" and b["n"] == 3 and b["temperature"] == 0.2 for b in bodies)
    roles = [m["role"] for m in bodies[0]["messages"]]
    assert roles == ["system", "user", "assistant", "user"]       # prompt + rubric, one example pair, the student's code
    exp_dir = CODEORG / "experiments" / "ai-rubrics-baseline" / "csd3-2023-L11"
    assert bodies[0]["messages"][0]["content"] == (exp_dir / "system_prompt.txt").read_text() + "\n\nRubric:\n" + (exp_dir / "standard_rubric.csv").read_text()
    assert all("//" not in b["messages"][-1]["content"] for b in bodies)   # remove-comments "1"
    g = run.gradings.set_index("student")
    assert g.loc["student_3", "status"] == "blank" and (g.drop("student_3").status == "ok").all()
    assert (g.drop("student_3").n_valid == 3).all()
    p = run.predictions
    assert len(p) == 6 * 4 and p.predicted.notna().all()
    ds = load_dataset(CODEORG, "contractor-grades-sample", "csd3-2023-L11")
    assert p.set_index(["student", "concept"]).actual.to_dict() == {(s, c): ds.labels.at[s, c] for s in ds.labels.index for c in ds.labels.columns}
    for s in ("student_1", "student_2"):                          # the majority of the three hashed answers
        code = _strip(ds.artifacts[s])
        assert code in [b["messages"][-1]["content"] for b in bodies]
        for c in ds.labels.columns:
            votes = [_hash_label(c, code, i) for i in range(3)]
            got = p[(p.student == s) & (p.concept == c)].iloc[0]
            assert json.loads(got.votes) == {l: votes.count(l) for l in DEFAULT_LABELS if l in votes}
            assert got.split == (len(set(votes)) > 1)
    out = {f.name for f in (tmp_path / "out").iterdir()}
    assert {"metrics.csv", "predictions.csv", "gradings.csv", "rubric_run.json", "report.html", "confidence", "plots"} <= out
    conf = json.loads((tmp_path / "out" / "confidence" / "csd3-2023-L11.json").read_text())
    assert set(conf) == set(ds.labels.columns) and set(conf.values()) <= {"HIGH", "MEDIUM", "LOW"}
    m = pd.read_csv(tmp_path / "out" / "metrics.csv")
    assert list(m.columns[:8]) == ["lesson", "concept", "rater", "metric", "value", "ci_low", "ci_high", "n"]


def _strip(code: str) -> str:
    from research_kit.rubric.grading import remove_comments
    return remove_comments(code, "js")


def test_a_release_runs_as_an_experiment_with_its_confidence(tmp_path):
    with ScriptedServer(reply=_tsv_grader) as srv, InferenceAPI(cache_dir=tmp_path / "cache") as api:
        run = run_rubric(CODEORG, "contractor-grades-sample", "ai-rubrics-2024", tmp_path / "out", api=api, kind="releases",
                         num_responses=1, progress=False, report=False, **srv.params)
        assert srv.requests == 5 and all(b.get("n", 1) == 1 for b in srv.bodies)
    assert run.info["kind"] == "releases" and run.info["params"]["csd3-2023-L11"]["num-responses"] == 1


def _cache_entries(path: Path) -> int:
    c = DiskCache(path)
    try: return len(c)
    finally: c.close()


def test_rk_rubric_run_killed_mid_way_reruns_only_the_missing_answers(tmp_path, rk):
    total = 50                                                    # 52 example artifacts, 2 blank
    with ScriptedServer(reply=_json_grader, latency=(0.1, 1.0)) as srv:   # 32 in flight at once, answered at spread times
        args = ["rubric", "run", "-m", "openai/scripted", "--api-base", srv.url, "-o", "out", "-q", "--no-report"]
        proc = subprocess.Popen([rk.path, *args], cwd=tmp_path, env={**os.environ, **KEY}, stdin=subprocess.DEVNULL,
                                stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True)
        deadline = time.monotonic() + 120
        while srv.requests < 40 and time.monotonic() < deadline and proc.poll() is None: time.sleep(0.02)
        time.sleep(0.1)
        os.killpg(proc.pid, signal.SIGKILL); proc.wait()
        time.sleep(1.0)                                           # answers the server was still holding
        assert not (tmp_path / "out" / "predictions.csv").exists()   # nothing half-written
        answered, before = _cache_entries(tmp_path / "out" / "cache"), srv.requests
        assert 0 < answered < total, answered
        again = rk(*args, cwd=tmp_path, env=KEY, timeout=300)
        assert again.returncode == 0, again.stderr
        assert srv.requests - before == total - answered           # only what the cache did not hold
        assert _cache_entries(tmp_path / "out" / "cache") == total
        g = pd.read_csv(tmp_path / "out" / "gradings.csv")
        assert (g.status != "blank").sum() == total and int(g.cached.sum()) == answered


def test_the_gate_and_compare_from_the_command_line(tmp_path, capsys, monkeypatch):
    monkeypatch.setenv("OPENAI_API_KEY", KEY["OPENAI_API_KEY"])
    always = lambda body: json.dumps([{"Key Concept": c, "Observations": "", "Label": "Convincing Evidence", "Reason": ""} for c in _concepts(body)])

    def human_like(body):                                         # the first human's labels: a perfect grader
        code = body["messages"][-1]["content"]
        s = next(s for s, a in ARTIFACTS.items() if a == code)
        return json.dumps([{"Key Concept": c, "Observations": "", "Label": LABELS.at[s, c], "Reason": ""} for c in _concepts(body)])

    ds = load_dataset(example_root(), "example", "py-loops")
    ARTIFACTS, LABELS = ds.artifacts, ds.labels
    common = ["rubric", "run", "--lesson", "py-loops", "-q", "--no-report", "--min-qwk", "0.6"]
    with ScriptedServer(reply=always) as a, ScriptedServer(reply=human_like) as b:
        assert main([*common, "-m", "openai/always", "--api-base", a.url, "-o", str(tmp_path / "a")]) == 1
        err = capsys.readouterr().err
        assert "rk: gate: py-loops / Loops" in err and "lower bound" in err
        assert main([*common, "-m", "openai/human", "--api-base", b.url, "-o", str(tmp_path / "b")]) == 0
        assert "gate: every key concept's qwk lower bound >= 0.6" in capsys.readouterr().out
    assert main(["rubric", "compare", str(tmp_path / "a"), str(tmp_path / "b"), "--csv", str(tmp_path / "cmp.csv")]) == 0
    shown = capsys.readouterr().out
    assert "py-loops" in shown and "exact_accuracy" in shown
    cmp = pd.read_csv(tmp_path / "cmp.csv")
    row = cmp[(cmp.concept == "(all)") & (cmp.metric == "exact_accuracy")].iloc[0]
    pa, pb = (pd.read_csv(tmp_path / d / "predictions.csv").dropna(subset=["predicted", "actual"]) for d in "ab")
    assert row["a"] == (pa.predicted == pa.actual).mean() and row["b"] == (pb.predicted == pb.actual).mean() == 1.0
    assert row["n"] == len(pa) == 78 and abs(row["diff"] - (row["b"] - row["a"])) < 1e-12 and row["ci_low"] > 0


def test_rk_run_rubric_notebook_through_papermill(tmp_path, rk):
    "The experiment notebook's parameters through `rk run rubric` (the docs build runs its defaults on the embedded model)."
    with ScriptedServer(reply=_json_grader) as srv:
        out = rk("run", "rubric", "-p", "model", "openai/scripted", "-p", "api_base", srv.url, "-p", "lessons", "js-sprites",
                 "-p", "max_students", "0", "-p", "num_responses", "2", "-o", "rub", cwd=tmp_path, env=KEY, timeout=600)
        assert out.returncode == 0, out.stderr
        assert srv.requests == 25                                 # 26 artifacts, one blank
    exp = tmp_path / "rub"
    g = pd.read_csv(exp / "gradings.csv")
    assert len(g) == 26 and set(g.status) == {"ok", "blank"} and (g[g.status == "ok"].n_valid == 2).all()
    p = pd.read_csv(exp / "predictions.csv")
    assert len(p) == 78 and set(p.predicted) <= set(DEFAULT_LABELS) and set(p.lesson) == {"js-sprites"}
    assert (exp / "report.html").stat().st_size > 10_000 and (exp / "results" / "metrics.csv").exists()
    info = json.loads((exp / "rubric_run.json").read_text())
    assert info["models"] == ["openai/scripted"] and info["params"]["js-sprites"]["num-responses"] == 2
