"""research_kit.simulation.sweep: refinement on a synthetic system with a known boundary (the 3x figure), reruns
that skip finished rows and reproduce points.csv byte for byte, failures recorded (a raising point, a killed worker),
bad_mask, the overhead of a 1,000-point sweep on 2 local processes, and a Dask cluster."""
import json
import math
import os
import random

import pandas as pd
import pytest

from research_kit.runner import UsageError
from research_kit.simulation.sweep import bad_mask, refine, sweep

LINE = (0.27, 0.5)  # the true boundary: bad iff y > 0.27 + 0.5 x
NOISE = 0.01  # the noisy system moves the boundary by up to this much per seed
COARSE = {"x": [i / 8 for i in range(9)], "y": [i / 8 for i in range(9)], "system": "line"}
FINE = 1 / 32  # the coarse spacing 1/8 halved twice
CALLS = []  # the in-process calls of `counted`


def line(p):
    "The synthetic system: its height above the boundary (noisy by seed with `noise`)."
    noise = random.Random(f"{p['seed']}:{p['x']}:{p['y']}:noise").uniform(-NOISE, NOISE) if p.get("noisy") else 0.0
    return {"height": p["y"] - (LINE[0] + LINE[1] * p["x"]) - noise}


def counted(p):
    CALLS.append(p)
    if p["a"] == 3: raise RuntimeError("a = 3 is out of range\nwith a second line")
    return {"m": p["a"] / 3 + p["seed"], "k": p["k"]}


def noop(p):
    return {"v": 0.0}


def dies(p):
    if p["a"] == 5: os._exit(3)
    return {"v": float(p["a"])}


def _brackets(df):
    "Per fine column x: (the highest good y, the lowest bad y), P(bad) being the mean over seeds."
    p = df.assign(bad=bad_mask(df, "height > 0")).groupby(["x", "y"])["bad"].mean().reset_index()
    return {x: (g.loc[g.bad < 0.5, "y"].max(), g.loc[g.bad >= 0.5, "y"].min()) for x, g in p.groupby("x")}


@pytest.mark.parametrize("seeds,noisy,n_jobs", [(1, False, 1), (3, True, 2)])
def test_refine_finds_the_boundary_with_3x_fewer_runs(seeds, noisy, n_jobs):
    df = refine(line, COARSE, "height > 0", seeds=seeds, rounds=2, fixed={"noisy": noisy}, n_jobs=n_jobs, progress=False)
    fine_runs = 33 * 33 * seeds
    assert df.attrs["sweep"]["fine_grid_runs"] == fine_runs
    ratio = fine_runs / len(df)
    print(f"refine: {len(df)} runs vs {fine_runs} for the full fine grid: {ratio:.1f}x fewer")
    assert ratio >= 3
    assert df.groupby(["point"]).size().eq(seeds).all() and df["error"].isna().all()
    assert sorted(df["round"].unique()) == [0, 1, 2] and (df["round"] == 0).sum() == 81 * seeds
    assert not df.duplicated(["x", "y", "seed"]).any()  # no point run twice
    found = _brackets(df)
    assert len(found) == 33  # every column of the fine lattice
    tol = NOISE if noisy else 0.0
    for x, (lo, hi) in found.items():
        assert math.isclose(hi - lo, FINE), (x, lo, hi)  # located within the fine spacing ...
        assert lo - tol <= LINE[0] + LINE[1] * x < hi + tol, (x, lo, hi)  # ... around the true boundary


def test_refine_rerun_into_out_runs_nothing_and_writes_the_same_bytes(tmp_path):
    first = refine(line, COARSE, "height > 0", rounds=2, out=tmp_path, n_jobs=1, progress=False)
    data = (tmp_path / "points.csv").read_bytes()
    again = refine(line, COARSE, lambda r: r["height"] > 0, rounds=2, out=tmp_path, n_jobs=1, progress=False)
    assert again.attrs["sweep"]["ran"] == 0 and again.attrs["sweep"]["skipped"] == len(first)
    assert (tmp_path / "points.csv").read_bytes() == data
    assert again.equals(first)
    info = json.loads((tmp_path / "sweep.json").read_text())
    assert info["points_per_round"][0] == 81 and info["fine_grid_runs"] == 1089 and info["bad"].endswith("<lambda>")


def test_sweep_rerun_skips_everything_and_rerun_true_reproduces_the_bytes(tmp_path):
    grid = {"a": [0, 1, 2], "b": [0.1, 0.2]}
    CALLS.clear()
    df = sweep(counted, grid, seeds=2, out=tmp_path, fixed={"k": 1.5}, n_jobs=1, progress=False)
    assert len(CALLS) == 12 and list(df.columns) == ["a", "b", "seed", "point", "m", "k", "error"]
    assert df["point"].tolist() == [0, 0, 1, 1, 2, 2, 3, 3, 4, 4, 5, 5] and df["seed"].tolist() == [0, 1] * 6
    data = (tmp_path / "points.csv").read_bytes()
    CALLS.clear()
    again = sweep(counted, grid, seeds=2, out=tmp_path, fixed={"k": 1.5}, n_jobs=1, progress=False)
    assert CALLS == [] and again.attrs["sweep"]["skipped"] == 12  # 0 calls
    assert again.equals(df) and (tmp_path / "points.csv").read_bytes() == data
    fresh = sweep(counted, grid, seeds=2, out=tmp_path, fixed={"k": 1.5}, n_jobs=2, progress=False, rerun=True)
    assert fresh.attrs["sweep"]["ran"] == 12 and (tmp_path / "points.csv").read_bytes() == data
    info = json.loads((tmp_path / "sweep.json").read_text())
    assert {k: info[k] for k in ("points", "runs", "failed", "skipped", "seeds", "grid", "fixed")} == \
        {"points": 6, "runs": 12, "failed": 0, "skipped": 0, "seeds": [0, 1], "grid": grid, "fixed": {"k": 1.5}}
    assert info["wall_s"] > 0 and info["overhead_ms_per_point"] >= 0
    with pytest.warns(UserWarning, match="running every point again"):  # other fixed parameters: nothing is reused
        changed = sweep(counted, grid, seeds=2, out=tmp_path, fixed={"k": 2.0}, n_jobs=1, progress=False)
    assert changed.attrs["sweep"]["ran"] == 12 and changed["k"].eq(2.0).all()


def test_a_grown_grid_runs_only_the_new_points(tmp_path):
    sweep(counted, {"a": [0, 1]}, out=tmp_path, fixed={"k": 0}, n_jobs=1, progress=False)
    CALLS.clear()
    df = sweep(counted, {"a": [0, 1, 2]}, out=tmp_path, fixed={"k": 0}, n_jobs=1, progress=False)
    assert [c["a"] for c in CALLS] == [2] and df["a"].tolist() == [0, 1, 2]


def test_a_failing_point_is_recorded_and_run_again_on_a_rerun(tmp_path):
    df = sweep(counted, {"a": [2, 3, 4]}, seeds=2, out=tmp_path, fixed={"k": 0}, n_jobs=2, progress=False)
    failed = df[df["error"].notna()]
    assert failed["a"].tolist() == [3, 3] and failed["error"].eq("RuntimeError: a = 3 is out of range").all()
    assert failed["m"].isna().all() and df.loc[df.a != 3, "m"].notna().all()
    assert json.loads((tmp_path / "sweep.json").read_text())["failed"] == 2
    assert "a = 3 is out of range" in (tmp_path / "points.csv").read_text()
    CALLS.clear()
    again = sweep(counted, {"a": [2, 3, 4]}, seeds=2, out=tmp_path, fixed={"k": 0}, n_jobs=1, progress=False)
    assert [c["a"] for c in CALLS] == [3, 3] and again.attrs["sweep"]["skipped"] == 4


def test_bad_mask_string_callable_and_unknown_column():
    df = pd.DataFrame({"rate": [0.0, 0.5, 1.0, 1.0], "seed": 0, "point": [0, 1, 2, 3], "harm_leakage": [0.0, 0.2, 0.4, math.nan],
                       "error": [None, None, None, "TimeoutError: slow"]})
    assert bad_mask(df, "harm_leakage > 0.1").tolist() == [False, True, True, False]
    assert bad_mask(df, "harm_leakage > 0.1 and rate < 1").tolist() == [False, True, False, False]
    assert bad_mask(df, lambda r: r["harm_leakage"] >= 0.4 or r["rate"] == 0).tolist() == [True, False, True, False]
    with pytest.raises(UsageError, match="column 'harm', which the results table lacks; its columns: rate, seed, point, harm_leakage, error"):
        bad_mask(df, "harm > 0.1")
    with pytest.raises(UsageError, match="column 'leak'"):
        bad_mask(df, lambda r: r["leak"] > 0)


def test_errors_name_the_field_and_the_fix():
    with pytest.raises(UsageError, match="point 1: parameter 'model' is a object, not a JSON value; give numbers"):
        sweep(noop, [{"model": "a"}, {"model": object()}], progress=False)
    with pytest.raises(UsageError, match="'a' has an empty list of values; give every parameter at least one value"):
        sweep(noop, {"a": [], "b": [1]}, progress=False)
    with pytest.raises(UsageError, match="sweep grid: a grid maps parameter names"):
        sweep(noop, {}, progress=False)
    with pytest.raises(UsageError, match="refine sweeps exactly two parameters; this grid varies \\['x', 'y', 'system'\\]"):
        refine(line, {**COARSE, "system": ["a", "b"]}, "height > 0", progress=False)
    with pytest.raises(UsageError, match="'seed' is a column the results table adds; give seeds with seeds="):
        sweep(noop, {"seed": [0, 1]}, progress=False)


def test_1000_point_sweep_on_2_processes_has_milliseconds_of_overhead():
    sweep(noop, {"a": list(range(10))}, n_jobs=2, progress=False)  # start the processes (a pool is reused)
    df = sweep(noop, {"a": list(range(1000))}, n_jobs=2, progress=False)
    info = df.attrs["sweep"]
    print(f"1,000-point sweep on 2 processes: {info['wall_s']:.3f} s, overhead {info['overhead_ms_per_point']:.3f} ms/point")
    assert len(df) == 1000 and df["error"].isna().all() and info["workers"] == 2
    assert info["overhead_ms_per_point"] < 50  # generous: tests/bench_simulation.py measures the figure


def test_a_worker_that_dies_fails_its_runs_and_the_sweep_goes_on():
    df = sweep(dies, {"a": list(range(40))}, n_jobs=2, progress=False)
    lost = df[df["error"].notna()]
    assert 5 in lost["a"].tolist() and lost["error"].str.startswith("this run was lost before it finished").all()
    assert df.loc[df["error"].isna(), "v"].eq(df.loc[df["error"].isna(), "a"]).all()


def test_dask_cluster():
    from distributed import LocalCluster
    with LocalCluster(n_workers=1, threads_per_worker=2, processes=False, dashboard_address=None) as cluster:
        df = sweep(counted, {"a": [1, 2, 3]}, seeds=2, fixed={"k": 0}, scheduler=cluster.scheduler_address, progress=False)
    assert df.loc[df.a == 3, "error"].eq("RuntimeError: a = 3 is out of range").all()
    assert df.loc[df.a == 1, "m"].tolist() == [1 / 3, 1 + 1 / 3]
