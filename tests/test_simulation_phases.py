"""Phases on synthetic systems with a known boundary: the P(bad) = 0.5 line from `boundary` lies inside its bootstrap
band and within one grid cell of the truth (full grid and refine-like irregular points); metric CIs hold the programmed
means; regimes on a hand-made table; the phase plots carry the artists they promise."""
import math

import matplotlib as mpl
import numpy as np
import pandas as pd
import pytest
from scipy.interpolate import RegularGridInterpolator

from research_kit.plotting import REGIME_COLORS, metric_grid, phase_diagram, regime_map
from research_kit.simulation.phases import REGIMES, Boundary, boundary, phase_table, regimes

S = 0.05  # the sigmoid's width
def f(x): return 0.3 + 0.4 * x  # the true boundary: y where P(bad) = 0.5
def p_true(x, y): return 1 / (1 + np.exp(-(y - f(x)) / S))
def mean_true(x, y): return 0.2 + 0.5 * x * y  # the programmed mean of the metric `score`

def table(points, seeds=20, rng_seed=0, round=None) -> pd.DataFrame:
    "A results table in the sweep's layout: bad with probability sigmoid((y - f(x)) / S); `score` ~ Binomial(40, mean)/40."
    rng, rows = np.random.default_rng(rng_seed), []
    for i, (x, y) in enumerate(points):
        for s in range(seeds):
            rows.append({"x": x, "y": y, "seed": s, "point": i, "bad": float(rng.random() < p_true(x, y)),
                         "score": rng.binomial(40, mean_true(x, y)) / 40, "error": None} | ({} if round is None else {"round": round}))
    return pd.DataFrame(rows)

AXIS = np.round(np.linspace(0, 1, 11), 2)
FULL = [(x, y) for x in AXIS for y in AXIS]

def band_holds(b: Boundary, lines) -> bool:
    "Every point of `lines` has low <= level <= high, the surfaces interpolated on b's grid."
    g = b.grid.sort_values([b.y, b.x])
    xs, ys = np.unique(g[b.x]), np.unique(g[b.y])
    at = lambda c: RegularGridInterpolator((ys, xs), g[c].to_numpy().reshape(len(ys), len(xs)))
    pts = np.concatenate([line[:, ::-1] for line in lines])
    return bool(((at("p_bad_low")(pts) <= b.level + 1e-9) & (b.level - 1e-9 <= at("p_bad_high")(pts))).all())

def off_truth(lines) -> float:
    "The largest vertical distance of the lines' points from the true boundary."
    return max(abs(y - f(x)) for line in lines for x, y in line)

@pytest.mark.parametrize("rng_seed", [0, 1, 2])
def test_boundary_full_grid(rng_seed):
    b = boundary(table(FULL, rng_seed=rng_seed), "x", "y", bad="bad > 0.5", n_boot=200, seed=rng_seed)
    assert len(b.contour) >= 1 and b.grid.run.all()
    assert off_truth(b.contour) <= 0.1   # within one grid cell
    assert band_holds(b, b.contour)
    assert b.contour_low and b.contour_high

def test_boundary_irregular_points():
    "A coarse grid plus fine points near the truth only, as refine makes them: interpolated, still within a fine cell."
    coarse = [(x, y) for x in AXIS[::2] for y in AXIS[::2]]
    near = [(x, y) for x, y in FULL if (x, y) not in coarse and abs(y - f(x)) < 0.15]
    df = pd.concat([table(coarse, round=0), table(near, rng_seed=1, round=1).assign(point=lambda d: d.point + len(coarse))], ignore_index=True)
    b = boundary(df, "x", "y", bad=lambda m: m["bad"] > 0.5)
    assert len(coarse) + len(near) < len(FULL)
    assert not b.grid.run.all() and b.grid.p_bad.notna().all()   # cells not run are interpolated
    assert set(b.points["round"]) == {0, 1}
    assert off_truth(b.contour) <= 0.1 and band_holds(b, b.contour)

def test_boundary_seeded():
    df = table(FULL[:40])
    a, b = boundary(df, "x", "y", "bad > 0.5", seed=3), boundary(df, "x", "y", "bad > 0.5", seed=3)
    assert a.grid.equals(b.grid)

def test_metric_ci_holds_programmed_mean():
    t = phase_table(table(FULL), "x", "y", metrics="score", bad="bad > 0.5")
    truth = mean_true(t.x, t.y)
    assert ((t.score_low <= truth) & (truth <= t.score_high)).mean() >= 0.85
    p = p_true(t.x, t.y)
    assert ((t.p_bad_low <= p) & (p <= t.p_bad_high)).mean() >= 0.85
    assert (t.n == 20).all() and (t.errors == 0).all()

def test_errors_are_counted_not_averaged():
    df = table(FULL[:3], seeds=4)
    df.loc[df.index[:2], ["bad", "score"]] = math.nan
    df.loc[df.index[:2], "error"] = "RuntimeError: boom"
    t = phase_table(df, "x", "y", bad="bad > 0.5")
    assert t[["n", "errors"]].values.tolist()[0] == [2, 2]
    assert t.score[0] == pytest.approx(df.score.iloc[2:4].mean())

def test_regimes_hand_made():
    hand = pd.DataFrame({"a": [0, 0, 1, 1], "b": [0, 1, 0, 1], "n": 5, "p_bad": [0.0, 0.8, 0.2, 0.6]})
    r = regimes(hand, lambda p: p["b"] == 1 and p["a"] == 0)
    assert r.regime.tolist() == ["good, expected", "bad, expected", "good, expected", "bad, surprising"]
    r = regimes(hand, pd.DataFrame({"a": [0, 0, 1, 1], "b": [0, 1, 0, 1], "expected_bad": [1, 0, 1, 0]}))
    assert r.regime.tolist() == ["good, surprising", "bad, surprising", "good, surprising", "bad, surprising"]
    assert set(r.observed) == {"good", "bad"} and set(r.expected) == {"good", "bad"}
    with pytest.raises(ValueError, match="no column 'b'"): regimes(hand, pd.DataFrame({"a": [0], "expected_bad": [True]}))

def test_plots_have_their_artists():
    df = table(FULL, seeds=6)
    b = boundary(df, "x", "y", bad="bad > 0.5")
    fig = phase_diagram(b)
    ax = fig.axes[0]
    sets = [c for c in ax.collections if isinstance(c, mpl.contour.ContourSet)]
    assert [s.levels.tolist() for s in sets][-1] == [0.5] and len(sets) == 4   # band (filled), its edges, the line
    assert any(isinstance(c, mpl.collections.QuadMesh) for c in ax.collections)
    texts = [t.get_text() for t in fig.legends[0].get_texts()]
    assert texts[0] == "P(bad) = 0.5" and "bootstrap band" in texts[1] and texts[2] == "points run (121)"

    t = phase_table(df, "x", "y", bad="bad > 0.5")
    reg = regimes(t, lambda p: p["y"] > 0.5)
    legend = [s.get_text().rsplit(" (", 1)[0] for s in regime_map(reg, "x", "y").legends[0].get_texts()]
    assert legend == list(REGIMES) == list(REGIME_COLORS)

    grid = metric_grid(t, "x", "y", ["score", "p_bad"])
    assert [a.get_title() for a in grid.axes[:2]] == ["score", "p_bad"] and len(grid.axes[0].texts) == len(t)
    assert "\n[" in grid.axes[0].texts[0].get_text()
