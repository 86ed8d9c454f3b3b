"""Paired comparison and the leaderboard on real runs: a user_data scenario of 500 items, three scripted models
through run_benchmark and a ScriptedServer (issue 14, acceptance: compare finds a 10% difference, the leaderboard
separates it, and a 2-item difference shares a tie group)."""
import math
import re
import shutil
import time
from dataclasses import replace

import numpy as np
import pandas as pd
import pytest
from scipy.stats import binomtest
from statsmodels.stats.contingency_tables import mcnemar as sm_mcnemar

from research_kit.benchmark.compare import compare, format_table, instance_scores, leaderboard, main_metric
from research_kit.benchmark.runs import LoadedRun, load_run, run_benchmark
from research_kit.client import InferenceAPI
from research_kit.stats import min_detectable_effect
from research_kit.testing import ScriptedServer

N = 500
WRONG = {"model-a": set(), "model-b": set(range(0, N, 10)), "model-c": {3, 7}}  # B: exactly 50 wrong, C: exactly 2


def _reply(body: dict) -> str:
    i = int(re.findall(r"What is (\d+) plus one\?", body["messages"][-1]["content"])[-1])
    return "wrong" if i in WRONG[body["model"]] else str(i + 1)


@pytest.fixture(scope="module")
def out(tmp_path_factory):
    "An output dir with one suite per model, each holding the user_data run of 500 items."
    tmp = tmp_path_factory.mktemp("compare")
    (tmp / "qa.csv").write_text("question,answer\n" + "".join(f"What is {i} plus one?,{i + 1}\n" for i in range(N)))
    entry = f"user_data:path={tmp / 'qa.csv'},input=question,output=answer"
    with ScriptedServer(reply=_reply) as srv:
        api = InferenceAPI(cache_dir=tmp / "cache")
        for m in WRONG:
            run_benchmark([entry], api, tmp, suite=m, models=[f"openai/{m}"], progress=False, **srv.params)
        api.close()
    return tmp


def _run(out, m):
    return next((out / "runs" / m).iterdir())


def test_instance_scores_and_main_metric(out):
    s = instance_scores(_run(out, "model-b"))
    assert len(s) == N and s["instance_id"].is_unique and s["perturbation"].isna().all()
    assert s["exact_match"].sum() == N - 50
    assert main_metric(_run(out, "model-b")) == "exact_match"


def test_compare_finds_the_ten_percent(out):
    ab = compare(out / "runs/model-a", out / "runs/model-b")
    assert len(ab) == 1
    row = ab.iloc[0]
    assert (row["model_a"], row["model_b"], row["test"], row["n"], row["dropped"]) == ("openai/model-a", "openai/model-b", "mcnemar-exact", N, 0)
    assert row["diff"] == pytest.approx(0.1) and row["mean_a"] == 1.0 and row["mean_b"] == pytest.approx(0.9)
    # 50 discordant pairs, all one way: the exact two-sided binomial p is 2 * 0.5**50
    assert row["p_value"] == pytest.approx(2 * 0.5 ** 50, rel=1e-9)
    assert row["p_value"] == pytest.approx(binomtest(0, 50, 0.5).pvalue, rel=1e-9)
    assert row["p_value"] == pytest.approx(sm_mcnemar([[450, 50], [0, 0]], exact=True).pvalue, rel=1e-9)
    assert row["p_value"] < 0.05 and row["significant"] and row["p_holm"] == row["p_value"]
    assert 0 < row["ci_low"] < 0.1 < row["ci_high"]
    sd = np.std(np.r_[np.ones(50), np.zeros(450)], ddof=1)
    assert row["mde"] == pytest.approx(min_detectable_effect(sd, N))
    text = format_table(ab)
    assert text.splitlines()[1].lstrip().startswith("*") and "+0.100" in text


def test_compare_two_items_is_not_significant(out):
    ac = compare(_run(out, "model-a"), _run(out, "model-c")).iloc[0]
    assert ac["p_value"] == pytest.approx(0.5) and not ac["significant"]
    assert abs(ac["diff"]) < ac["mde"]


def test_leaderboard_separates_b_and_ties_a_with_c(out):
    lb = leaderboard(out)
    t = lb.table.set_index("model")
    assert lb.table["model"].tolist() == ["openai/model-a", "openai/model-c", "openai/model-b"]
    assert t.loc["openai/model-a", "tie_group"] == t.loc["openai/model-c", "tie_group"] == 1
    assert t.loc["openai/model-b", "tie_group"] == 2
    assert lb.table["rank"].tolist() == [1, 1, 3]
    assert lb.long["tie_group"].tolist() == [1, 1, 2]
    assert lb.long["win_rate"].tolist() == [1.0, 0.5, 0.0]
    assert t["mean_win_rate"].tolist() == [1.0, 0.5, 0.0]
    assert set(lb.pairs["entry"]) == {lb.long["entry"][0], "overall"} and len(lb.pairs) == 6
    csv = lb.to_csv(out / "leaderboard.csv")
    assert pd.read_csv(csv)["model"].tolist() == lb.table["model"].tolist()
    assert "openai/model-c" in repr(lb) and "<table" in lb._repr_html_()


def test_compare_perturbation_groups(out):
    a, b = load_run(_run(out, "model-a")), load_run(_run(out, "model-b"))
    lower = lambda r: replace(r, requests=pd.concat([r.requests, r.requests.assign(perturbation="lowercase")], ignore_index=True))
    both = compare(lower(a), lower(b))
    assert both["perturbation"].tolist()[1:] == ["lowercase"] and pd.isna(both["perturbation"].iloc[0])
    assert (both["p_holm"] == 2 * both["p_value"]).all()  # Holm over the two rows of exact_match
    assert len(compare(lower(a), lower(b), perturbation="original")) == 1


def test_compare_errors(out):
    a, b = load_run(_run(out, "model-a")), load_run(_run(out, "model-b"))
    renamed = lambda r, name: replace(r, run_spec=r.run_spec.model_copy(update={"name": name}))
    with pytest.raises(ValueError, match=r"no run of run_a matches a run of run_b .*run_a has: x:k=1, y:k=2; run_b has: z"):
        compare([renamed(a, "x:k=1,model=A"), renamed(a, "y:k=2,model=A")], [renamed(b, "z:model=B")])
    half = out / "half"
    shutil.copytree(_run(out, "model-b"), half / "run")
    (half / "run" / "stats.json").unlink()
    with pytest.raises(FileNotFoundError, match="no stats.json here"):
        compare(_run(out, "model-a"), half / "run")
    with pytest.raises(FileNotFoundError, match="no finished run here"):
        compare(_run(out, "model-a"), half)
    other = replace(b, requests=b.requests.assign(instance_id="x" + b.requests["instance_id"]))
    with pytest.raises(ValueError, match="no instance id is scored in both"):
        compare(a, other)
    with pytest.raises(ValueError, match="no per-instance metric 'bleu'"):
        compare(a, b, metrics="bleu")


def test_min_detectable_effect():
    assert min_detectable_effect(0.5, 100) == pytest.approx((1.959964 + 0.841621) * 0.05, abs=1e-6)
    assert min_detectable_effect(0.5, 100, power=0.9) == pytest.approx((1.959964 + 1.281552) * 0.05, abs=1e-6)
    assert math.isnan(min_detectable_effect(0.5, 1))


def test_leaderboard_speed(out):
    "20 runs x 1,000 instances (4 models x 5 entries, made in memory): a few seconds."
    base, rng = load_run(_run(out, "model-a")), np.random.default_rng(0)
    def fake(k, entry):
        model = f"m{k}"
        spec = base.run_spec.model_copy(update={"name": f"arith:seed={entry},model={model}",
                                                "adapter_spec": base.run_spec.adapter_spec.model_copy(update={"model": model})})
        req = pd.DataFrame({"instance_id": [f"id{i}" for i in range(1000)], "perturbation": None, "split": "test", "error": None,
                            "exact_match": (rng.random(1000) < 0.5 + 0.1 * k).astype(float), "f1_score": rng.random(1000)})
        return LoadedRun(base.run_dir, spec, base.stats, req)
    runs = [fake(m, e) for m in range(4) for e in range(5)]
    for metric in ("exact_match", "f1_score"):
        t0 = time.perf_counter()
        lb = leaderboard(runs, metric=metric)
        took = time.perf_counter() - t0
        print(f"leaderboard, 20 runs x 1,000 instances, {metric}: {took:.2f} s")
        assert took < 10 and len(lb.pairs) == 5 * 6 + 6
    assert leaderboard(runs).table[["model", "rank"]].values.tolist() == [["m3", 1], ["m2", 2], ["m1", 3], ["m0", 4]]
