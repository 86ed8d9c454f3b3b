"""research_kit.labeling.agreement against hand-computed figures, and the LLM judge through a real OpenAI-compatible server.

Every expected number below is worked out in the comments from the definitions, not from the code under test."""
import json
from collections import Counter

import numpy as np
import pandas as pd
import pytest

from research_kit.client import InferenceAPI
from research_kit.labeling.agreement import (agreement, disagreements, humans_vs_judge, judge, label_table, pairwise,
                                             parse_judgement, vs_consensus)
from research_kit.labeling.schema import Categories, Scale, Schema, Text
from research_kit.labeling.store import LabelStore
from research_kit.plotting import agreement_matrix
from research_kit.stats import wilson
from research_kit.testing import ScriptedServer

R = 200  # bootstrap resamples: the point values below do not depend on them
SCHEMA = Schema([Scale("harm", 1, 5), Categories("verdict", ["x", "y", "z"]), Text("rationale")])


def frame(table: dict, field: str = "verdict", kind: str = "label") -> pd.DataFrame:
    "A labels() frame from {labeler: [value per item, None = not labeled]} over items i1, i2, ..."
    rows = [{"item": f"i{n + 1}", "labeler": who, "kind": kind, "value": {field: v}, "seconds": 1.0, "at": 0.0}
            for who, vals in table.items() for n, v in enumerate(vals) if v is not None]
    return pd.DataFrame(rows)


def row(df, field, metric):
    return df[(df.field == field) & (df.metric == metric)].iloc[0]


def test_cohen_kappa_two_labelers_by_hand():
    # items 1-5 both x; item 6 A x, B y; items 7-9 both y; item 10 A y, B x.
    # p_o = 8/10. A: x 6, y 4; B: x 6, y 4. p_e = 0.6*0.6 + 0.4*0.4 = 0.52.
    # kappa = (0.8 - 0.52) / (1 - 0.52) = 0.28 / 0.48 = 7/12.
    A = ["x"] * 6 + ["y"] * 4
    B = ["x"] * 5 + ["y"] + ["y"] * 3 + ["x"]
    df = agreement(frame({"A": A, "B": B}), SCHEMA, "verdict", n_resamples=R)
    assert df.metric.tolist() == ["krippendorff_alpha", "fleiss_kappa", "cohen_kappa", "percent_agreement"]
    k = row(df, "verdict", "cohen_kappa")
    assert k.value == pytest.approx(7 / 12, abs=1e-12) and k.n == 10 and k.ci_low < 7 / 12 < k.ci_high
    pa = row(df, "verdict", "percent_agreement")
    assert (pa.value, pa.ci_low, pa.ci_high, pa.n) == pytest.approx((0.8, wilson(8, 10).ci_low, wilson(8, 10).ci_high, 10))
    pw = pairwise(frame({"A": A, "B": B}), SCHEMA, "verdict", n_resamples=R)
    assert pw[["a", "b", "n"]].values.tolist() == [["A", "B", 10]] and pw.value[0] == pytest.approx(7 / 12, abs=1e-12)


def test_quadratic_kappa_on_a_scale_by_hand():
    # pairs (1,1), (2,3), (3,3): O has one count at (0,0), (1,2), (2,2). Rows (A) 1,1,1; columns (B) 1,0,2; E = r c / 3.
    # sum w*O = (1-2)^2... only (1,2) disagrees: weight 1 -> 1. sum w*E = 8/3 + 1 + 4/3 = 5. kappa = 1 - 1/5 = 0.8.
    # The scale's unused points 4 and 5 have no marginal mass, so they do not change it.
    pw = pairwise(frame({"A": [1, 2, 3], "B": [1, 3, 3]}, "harm"), SCHEMA, "harm", n_resamples=R)
    assert pw.value[0] == pytest.approx(0.8, abs=1e-12)


def test_fleiss_and_krippendorff_three_labelers_by_hand():
    # items (A, B, C): i1 x x x; i2 x x y; i3 y y y; i4 x y y; i5 x y - (C skipped); i6 x - - (one label only).
    table = {"A": ["x", "x", "y", "x", "x", "x"], "B": ["x", "x", "y", "y", "y", None], "C": ["x", "y", "y", "y", None, None]}
    df = agreement(frame(table), SCHEMA, n_resamples=R)
    # Fleiss over i1-i4 (every labeler rated them), n = 3 raters: P_i = (sum n_ij^2 - 3) / 6 -> 1, 1/3, 1, 1/3; P = 2/3.
    # p_x = (3 + 2 + 0 + 1) / 12 = 1/2 = p_y; Pe = 1/2. kappa = (2/3 - 1/2) / (1/2) = 1/3.
    fk = row(df, "verdict", "fleiss_kappa")
    assert fk.value == pytest.approx(1 / 3, abs=1e-12) and fk.n == 4
    # Krippendorff nominal: coincidences per unit n_c n_k / (m_u - 1). i2, i4 (m=3, 2+1) give o_xy 1 each; i5 (m=2) gives 1: o_xy = o_yx = 3.
    # o_xx = 3 (i1) + 1 (i2) = 4, o_yy = 3 (i3) + 1 (i4) = 4; n_x = 7, n_y = 7, n = 14 (i6 has one value: not pairable).
    # alpha = 1 - (n - 1) * sum_{c != k} o_ck / sum_{c != k} n_c n_k = 1 - 13 * 6 / (2 * 7 * 7) = 1 - 78/98 = 10/49.
    ka = row(df, "verdict", "krippendorff_alpha")
    assert ka.value == pytest.approx(10 / 49, abs=1e-12) and ka.n == 5
    # Percent agreement: of the 5 items with two labels or more, i1 and i3 are unanimous.
    assert row(df, "verdict", "percent_agreement").value == pytest.approx(2 / 5)
    assert "cohen_kappa" not in df.metric.tolist()  # three labelers


def test_label_table_order_and_gaps():
    t = label_table(frame({"A": ["x", None, "y"], "B": ["y", "x", None]}), "verdict")
    assert t.index.tolist() == ["i1", "i3", "i2"] and t.columns.tolist() == ["A", "B"]  # a frame's items in order of first appearance
    assert t.loc["i1"].tolist() == ["x", "y"] and pd.isna(t.at["i2", "A"]) and pd.isna(t.at["i3", "B"])


def test_leave_one_out_consensus_by_hand():
    humans = frame({"A": ["x", "x", "y", "x"], "B": ["x", "y", "y", "x"], "C": ["x", "y", "x", "y"]})
    judge_ = frame({"J": ["x", "y", "y", "x"]}, kind="judge")
    vc = vs_consensus(pd.concat([humans, judge_]), SCHEMA, "verdict", n_resamples=R).set_index("labeler")
    # A against B, C: i1 x/x -> x, i2 y/y -> y, i3 y/x tie, i4 x/y tie: 2 items, A right on i1 only.
    # B against A, C: only i1 (x/x) has a majority: 1 item, right.
    # C against A, B: i1 x, i3 y, i4 x (i2 x/y tie): C says x, x, y: right on i1 only.
    # J against all three humans: x, y (2 of 3), y, x: 4 items, all right.
    assert vc.loc[["A", "B", "C", "J"], "n"].tolist() == [2, 1, 3, 4]
    assert vc.loc[["A", "B", "C", "J"], "agreement"].tolist() == pytest.approx([1 / 2, 1, 1 / 3, 1])
    assert vc.loc[["A", "B", "C", "J"], "kind"].tolist() == ["label", "label", "label", "judge"]
    # C's kappa: C = x x y, consensus = x y x. p_o = 1/3; both have x 2/3, y 1/3: p_e = 4/9 + 1/9 = 5/9.
    # kappa = (1/3 - 5/9) / (1 - 5/9) = -1/2.
    assert vc.loc["C", "kappa"] == pytest.approx(-0.5, abs=1e-12)
    # A scale's consensus is the median of the others; one between two points is no consensus.
    # A=1, B=2, C=4: A's others (2, 4) -> 3; B's (1, 4) -> 2.5 and C's (1, 2) -> 1.5: dropped.
    sc = vs_consensus(frame({"A": [1], "B": [2], "C": [4]}, "harm"), SCHEMA, "harm", n_resamples=R)
    assert sc.n.tolist() == [1, 0, 0] and sc.agreement[0] == 0


def test_disagreements_order():
    # harm ranges: i1 0 (agree), i2 3, i3 1, i4 3, i5 2, i6 one label only.
    harm = frame({"A": [2, 1, 3, 5, 1, 4], "B": [2, 4, 4, 2, 3, None]}, "harm")
    q = disagreements(harm, SCHEMA, "harm")
    assert q[["item", "spread"]].values.tolist() == [["i2", 3], ["i4", 3], ["i5", 2], ["i3", 1]]  # ties in item order
    assert q.labels[0] == {"A": {"harm": 1}, "B": {"harm": 4}}
    # categories: 1 - the modal share. i1 x x y -> 1/3; i2 x y z -> 2/3; i3 x y (C skipped) -> 1/2; i4 unanimous.
    cat = disagreements(frame({"A": ["x", "x", "x", "y"], "B": ["x", "y", "y", "y"], "C": ["y", "z", None, "y"]}), SCHEMA, "verdict")
    assert cat.item.tolist() == ["i2", "i3", "i1"] and cat.spread.tolist() == pytest.approx([2 / 3, 1 / 2, 1 / 3])


OUTPUTS = [("q1", "a1"), ("q2", "a2"), ("q3", "a3"), ("q4", "never valid")]


def scripted(asked: Counter):
    "The judge's script: prose the first time for a2, never valid for 'never valid', else a JSON label."
    def reply(body):
        output = body["messages"][-1]["content"].split("# Output\n")[1].split("\n\n# The label")[0]
        asked[output] += 1
        if output == "never valid" or (output == "a2" and asked[output] == 1): return "I would rate it low."
        return json.dumps({"harm": int(output[-1]), "verdict": "x"})
    return reply


def test_judge_retries_invalid_and_never_caches_it(tmp_path):
    store = LabelStore(tmp_path / "a.db")
    hashes = store.add_items(OUTPUTS)
    api = InferenceAPI(cache_dir=tmp_path / "cache", backoff_initial=0.01)
    asked = Counter()
    with ScriptedServer(reply=scripted(asked)) as srv:
        j = judge(store, SCHEMA, "openai/j", api=api, temperature=0, **srv.params)
        # a1, a3: 1 request each; a2: invalid then valid (2); 'never valid': 3 rounds (max_invalid_retries=2): 7 in all.
        assert srv.requests == 7 and asked == Counter({"a1": 1, "a2": 2, "a3": 1, "never valid": 3})
        assert j.valid.tolist() == [True, True, True, False] and j.value[1] == {"harm": 2, "verdict": "x"}
        labels = store.labels(kinds=("judge",))
        assert labels.kind.unique().tolist() == ["judge"] and labels.labeler.unique().tolist() == ["judge:openai/j"]
        assert sorted(labels.item) == sorted(hashes[:3])  # the invalid one is not recorded
        # A second run over the same items on a fresh store, through the same cache: the valid answers come from the
        # cache (0 requests for them); the invalid answer was never cached, so only that item is asked again.
        again = LabelStore(tmp_path / "b.db")
        again.add_items(OUTPUTS[:3])
        srv.reset_counts()
        assert judge(again, SCHEMA, "openai/j", api=api, temperature=0, **srv.params).cached.all() and srv.requests == 0
        assert len(again.labels(kinds=("judge",))) == 3
        srv.reset_counts()
        rerun = judge(store, SCHEMA, "openai/j", api=api, temperature=0, **srv.params)  # resumes: only the unlabeled item
        assert rerun.item.tolist() == [hashes[3]] and srv.requests == 3
    api.close()
    store.close(); again.close()


def test_parse_judgement():
    assert parse_judgement('ok: {"harm": "3", "verdict": "y"} done', SCHEMA) == {"harm": 3, "verdict": "y"}
    assert parse_judgement('{"harm": 9, "verdict": "y"}', SCHEMA) is None and parse_judgement("no json", SCHEMA) is None


def test_humans_vs_judge_shape():
    humans = frame({"A": [1, 2, 3, 4, 5, 2], "B": [1, 2, 4, 4, 5, 1], "C": [2, 2, 3, 5, 5, 2]}, "harm")
    df = pd.concat([humans, frame({"J": [1, 2, 3, 4, 4, 2]}, "harm", kind="judge")])
    hj = humans_vs_judge(df, SCHEMA, "harm", "J", n_resamples=R)
    assert hj.columns.tolist() == ["rater", "against", "value", "ci_low", "ci_high", "n"]
    assert hj.rater.tolist() == ["A", "B", "C", "human consensus", "humans (mean pairwise)"]
    assert hj.against.tolist() == ["J"] * 4 + ["humans"] and hj.n.tolist() == [6, 6, 6, 6, 3]
    assert hj.value.iloc[-1] == pytest.approx(pairwise(humans, SCHEMA, "harm", n_resamples=R).value.mean(), abs=1e-12)
    assert np.isnan(hj.ci_low.iloc[-1]) and not hj.ci_low.iloc[:4].isna().any()


def test_agreement_matrix_one_cell_per_pair():
    df = frame({"A": [1, 2, 3, 4, 5], "B": [1, 2, 4, 4, 5], "C": [2, 2, 3, 5, 5], "D": [1, 3, 3, 4, 4]}, "harm")
    pw = pairwise(df, SCHEMA, "harm", n_resamples=R)
    assert len(pw) == 6
    fig = agreement_matrix(pw, title="harm")
    ax = fig.axes[0]
    assert len(ax.texts) == 6
    assert ax.texts[0].get_text().startswith(f"{pw.value[0]:.2f}\n[") and ax.texts[0].get_text().endswith("n=5")
    assert [t.get_text() for t in ax.get_yticklabels()] == ["B", "C", "D"]
