"""The simulation's experiment notebooks through `rk`: the shipped grid swept one notebook per point with `rk sweep`,
then drawn as phases by `rk run systemic_safety_phases -p sweep_dir`. The scripted server plays worker and experts
(the notebooks' embedded-model defaults run in the docs build), so the phases are the programmed ones."""
import json

import pandas as pd

from research_kit.simulation.system import scripted_reply
from research_kit.testing import ScriptedServer


def test_rk_sweep_with_the_shipped_grid_then_its_phases(tmp_path, rk):
    with ScriptedServer(reply=scripted_reply()) as srv:
        fixed = ["-p", "worker_model", "openai/scripted", "-p", "expert_model", "openai/scripted", "-p", "api_base", srv.url]
        sweep = rk("sweep", "systemic_safety", "--grid", "systemic_safety", *fixed, "-o", "ss_sweep", cwd=tmp_path)
        assert sweep.returncode == 0, sweep.stderr
        assert "8 ran, 0 skipped" in sweep.stdout, sweep.stdout
        asked = srv.requests
        phases = rk("run", "systemic_safety_phases", "-p", "sweep_dir", "ss_sweep", "-q", cwd=tmp_path)
        assert phases.returncode == 0, phases.stderr
        assert srv.requests == asked  # drawing the phases asks nothing
    out = tmp_path / "rk_runs" / "systemic_safety_phases"
    reg = pd.read_csv(out / "results" / "regimes.csv").set_index(["perturbation_rate", "overseer_steps"])
    # every query jailbroken at rate 1: with the overseer every step all harm is caught; every 2nd step, half leaks
    assert reg["harm_leakage"].to_dict() == {(0.0, 1): 0.0, (0.0, 2): 0.0, (1.0, 1): 0.0, (1.0, 2): 2 / 3}, reg["harm_leakage"]
    assert reg.loc[(1.0, 2), "regime"] == "bad, expected" and reg.loc[(1.0, 1), "regime"] == "good, surprising"  # expected bad above rate 0.4
    assert reg.loc[(0.0, 1), "regime"] == "good, expected"
    for name in ("metrics", "phase_diagram", "regimes"):
        assert (out / "plots" / f"{name}.png").read_bytes()[:4] == b"\x89PNG", name
    runs = json.loads((tmp_path / "ss_sweep" / "sweep.json").read_text())["runs"]
    assert {r["parameters"]["teacher_mode"] for r in runs} == {"none"} and len(runs) == 8
