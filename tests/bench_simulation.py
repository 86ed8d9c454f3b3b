"""Simulation sweep figures, side by side in one run:

1. the overhead per point of a 1,000-point sweep of a no-op function on 2 local processes (the first sweep of a
   process, which starts the pool, and a later one), in this process (n_jobs=1), against a plain loop of calls;
2. adaptive refinement against the full fine grid on a synthetic system with a known boundary
   (bad iff y > 0.27 + 0.5 x): runs, the ratio, and how far the boundary found is from the true one.

One function per figure; `main()` prints the table. Run: .venv/bin/python tests/bench_simulation.py"""
import math
import random
import time

from research_kit.simulation.sweep import bad_mask, refine, sweep

LINE = (0.27, 0.5)  # bad iff y > 0.27 + 0.5 x
COARSE = {"x": [i / 8 for i in range(9)], "y": [i / 8 for i in range(9)]}


def noop(p):
    return {"v": 0.0}


def line(p):
    "The synthetic system: its height above the boundary, noisy by seed with `noise`."
    noise = random.Random(f"{p['seed']}:{p['x']}:{p['y']}:noise").uniform(-p["noise"], p["noise"]) if p["noise"] else 0.0
    return {"height": p["y"] - (LINE[0] + LINE[1] * p["x"]) - noise}


def overhead_figures(n: int = 1000) -> list[tuple[str, str, str]]:
    "Per-point overhead of sweeping a no-op: 2 processes (cold, warm), in process, and a plain loop."
    grid = {"a": list(range(n))}
    t = time.perf_counter()
    for i in range(n): noop({"a": i, "seed": 0})
    loop_ms = (time.perf_counter() - t) / n * 1000
    rows = []
    for label, n_jobs in (("sweep, 2 processes, first (pool starts)", 2), ("sweep, 2 processes, pool warm", 2), ("sweep, n_jobs=1 (in process)", 1)):
        info = sweep(noop, grid, n_jobs=n_jobs, progress=False).attrs["sweep"]
        rows.append((f"{n:,}-point no-op: {label}", f"{info['overhead_ms_per_point']:.3f} ms/point", f"wall {info['wall_s']:.2f} s"))
    rows.append((f"{n:,}-point no-op: plain loop of calls", f"{loop_ms:.4f} ms/point", f"wall {loop_ms * n / 1000:.3f} s"))
    return rows


def boundary_error(df) -> float:
    "The largest distance, over the columns x run, between the true boundary and the middle of the good/bad pair around it."
    p = df.assign(bad=bad_mask(df, "height > 0")).groupby(["x", "y"])["bad"].mean().reset_index()
    errs = []
    for x, g in p.groupby("x"):
        lo, hi = g.loc[g.bad < 0.5, "y"].max(), g.loc[g.bad >= 0.5, "y"].min()
        errs.append(abs((lo + hi) / 2 - (LINE[0] + LINE[1] * x)))
    return max(errs)


def refinement_figures(rounds: int = 2, seeds: int = 1, noise: float = 0.0) -> list[tuple[str, str, str]]:
    "refine against the full fine grid on the synthetic boundary: runs, ratio, boundary error, wall time."
    fine = {k: [i / (8 * 2 ** rounds) for i in range(8 * 2 ** rounds + 1)] for k in COARSE}
    what = f"{seeds} seed{'s' * (seeds > 1)}" + (f", noise {noise}" if noise else "")
    t = time.perf_counter()
    ref = refine(line, COARSE, "height > 0", seeds=seeds, rounds=rounds, fixed={"noise": noise}, n_jobs=1, progress=False)
    t_ref = time.perf_counter() - t
    t = time.perf_counter()
    full = sweep(line, fine, seeds=seeds, fixed={"noise": noise}, n_jobs=1, progress=False)
    t_full = time.perf_counter() - t
    spacing = 1 / (8 * 2 ** rounds)
    return [(f"refine, {rounds} rounds ({what})", f"{len(ref):,} runs, boundary within {boundary_error(ref):.4f}", f"wall {t_ref:.2f} s"),
            (f"full fine grid, spacing {spacing} ({what})", f"{len(full):,} runs, boundary within {boundary_error(full):.4f}", f"wall {t_full:.2f} s"),
            (f"refine: fewer runs than the full grid ({what})", f"{len(full) / len(ref):.1f}x", "target >= 3x")]


def cached_system_figures(n_jobs: int = 2) -> list[tuple[str, str, str]]:
    "A 1,000-point system sweep on the scripted server: once to fill its cache, then rerun from the cache into the same out."
    import tempfile
    from research_kit.simulation.system import scripted_reply, sweep_system
    from research_kit.testing import ScriptedServer
    grid = {"perturbation_rate": [i / 9 for i in range(10)], "harmlessness_thresh": list(range(10)), "overseer_steps": list(range(1, 11))}
    rows = []
    with ScriptedServer(reply=scripted_reply()) as srv, tempfile.TemporaryDirectory() as out:
        base = {"num_steps": 10, "teacher_mode": "refusal", "worker_model": "openai/scripted", "expert_model": "openai/scripted", "api_base": srv.url}
        for label, rerun in (("first sweep (fills the cache)", False), ("rerun from the cache", True)):
            n0, t = srv.requests, time.perf_counter()
            df = sweep_system(grid, seeds=1, base=base, out=out, n_jobs=n_jobs, progress=False, rerun=rerun)
            wall, calls, info = time.perf_counter() - t, srv.requests - n0, df.attrs["sweep"]
            assert info["ran"] == len(df) == 1000 and df["error"].isna().all(), df["error"].dropna().head()
            rows += [(f"1,000-point system sweep, {n_jobs} processes: {label}", f"wall {wall:.1f} s, {calls:,} model calls",
                      "target < 60 s, 0 calls" if rerun else f"{srv.requests:,} server requests so far"),
                     (f"  per point ({label})", f"{wall / len(df) * 1000:.1f} ms/point", f"fn {info['fn_s'] / len(df) * 1000:.1f} ms/run in the workers")]
    return rows


FIGURES = [overhead_figures, refinement_figures, lambda: refinement_figures(seeds=3, noise=0.01), cached_system_figures]


def main():
    rows = [r for figure in FIGURES for r in figure()]
    w0, w1 = max(len(r[0]) for r in rows), max(len(r[1]) for r in rows)
    print(f"{'figure':<{w0}}  {'value':<{w1}}  note")
    for name, value, note in rows: print(f"{name:<{w0}}  {value:<{w1}}  {note}")


if __name__ == "__main__":
    main()
