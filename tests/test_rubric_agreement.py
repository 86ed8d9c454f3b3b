"""The rubric grader's agreement figures against values computed by hand (and scikit-learn's kappas), the vote
figures, the second human, the pools, failed gradings, confidence levels under both rules, the QWK gate and
the confusion tables."""
import math

import numpy as np
import pandas as pd
import pytest
from sklearn.metrics import cohen_kappa_score

from research_kit.rubric.agreement import (METRICS_COLUMNS, POOLED, agreement, confidence_details, confidence_levels,
                                           confusion_tables, qwk_gate, summary_table)
from research_kit.rubric.data import LabelSet
from research_kit.stats import bootstrap_ci, wilson

E, C, L, N = LABELS = ("Extensive Evidence", "Convincing Evidence", "Limited Evidence", "No Evidence")
# ten students, one concept: exact on 7; s3, s6 and s9 are one level off; s3 alone crosses the pass line
ACTUAL = [E, C, C, L, N, E, C, L, N, C]
PREDICTED = [E, C, L, L, N, C, C, L, L, C]


def frame(actual, predicted, actual_2=None, lesson="L1", concept="Loops", n_votes=None, agree_votes=None):
    "Rows in the predictions table's shape (the columns the run writes)."
    n = len(actual)
    n_votes = n_votes or [3 if p is not None else 0 for p in predicted]
    return pd.DataFrame({"lesson": lesson, "student": [f"student_{i + 1}" for i in range(n)], "concept": concept,
                         "predicted": predicted, "actual": actual, "actual_2": actual_2 or [None] * n,
                         "votes": "{}", "n_votes": n_votes, "agree_votes": agree_votes or n_votes, "split": False,
                         "observations": "", "reason": "", "status": ["ok" if p is not None else "invalid" for p in predicted]})


def table(metrics, lesson="L1", concept="Loops", rater="grader"):
    "metric -> row, for one (lesson, concept, rater)."
    rows = metrics[(metrics["lesson"] == lesson) & (metrics["concept"] == concept) & (metrics["rater"] == rater)]
    return rows.set_index("metric")


def same(row, est):
    assert (row["value"], row["ci_low"], row["ci_high"], row["n"]) == pytest.approx((est.value, est.ci_low, est.ci_high, est.n), abs=1e-12)


@pytest.fixture(scope="module")
def ten():
    return table(agreement(frame(ACTUAL, PREDICTED), n_resamples=500))


def test_proportions_by_hand(ten):
    same(ten.loc["exact_accuracy"], wilson(7, 10))
    assert ten.loc["exact_accuracy", "ci_low"] == pytest.approx(0.3968, abs=1e-4)  # Wilson 7/10, by the closed form
    same(ten.loc["off_by_one"], wilson(3, 10))
    same(ten.loc["pass_fail_accuracy"], wilson(9, 10))
    same(ten.loc["tpr"], wilson(5, 6))  # the human passed 6 (s1 s2 s3 s6 s7 s10); the grader failed s3
    same(ten.loc["tnr"], wilson(4, 4))
    same(ten.loc["precision[Limited Evidence]"], wilson(2, 4))  # predicted L for s3 s4 s8 s9; L is right for s4 s8
    same(ten.loc["recall[Limited Evidence]"], wilson(2, 2))
    same(ten.loc["precision[Convincing Evidence]"], wilson(3, 4))  # predicted C for s2 s6 s7 s10; s6 is E
    same(ten.loc["recall[Convincing Evidence]"], wilson(3, 4))
    assert list(agreement(frame(ACTUAL, PREDICTED), n_resamples=50).columns) == METRICS_COLUMNS


def test_kappas_match_sklearn(ten):
    for metric, weights in (("kappa", None), ("qwk", "quadratic")):
        want = cohen_kappa_score(ACTUAL, PREDICTED, labels=list(LABELS), weights=weights)
        assert ten.loc[metric, "value"] == pytest.approx(want, abs=1e-12)
        assert ten.loc[metric, "ci_low"] < want < ten.loc[metric, "ci_high"] and ten.loc[metric, "n"] == 10


def test_kappa_of_one_label_is_nan_not_an_error():
    m = table(agreement(frame([C] * 5, [C] * 5), n_resamples=50))
    assert math.isnan(m.loc["kappa", "value"]) and math.isnan(m.loc["qwk", "value"])
    assert m.loc["exact_accuracy", "value"] == 1.0
    assert "tnr" not in m.index and "precision[No Evidence]" not in m.index  # n = 0: no row


def test_always_pass_grader_langwatch():
    "langwatch #6131: on data 90% pass, a grader that passes everything has 90% pass/fail accuracy and kappa 0."
    actual = [C] * 12 + [E] * 6 + [L] * 2
    m = table(agreement(frame(actual, [C] * 20), n_resamples=200))
    assert m.loc["pass_fail_accuracy", "value"] == pytest.approx(0.9)
    assert m.loc["kappa", "value"] == pytest.approx(0.0, abs=1e-12)
    assert (m.loc["tpr", "value"], m.loc["tnr", "value"]) == (1.0, 0.0)


def test_votes_self_consistency_and_unanimous():
    n_votes, agree = [3, 3, 3, 3, 1, 5], [3, 2, 2, 3, 1, 3]
    m = table(agreement(frame([E, C, L, N, E, C], [E, C, L, N, E, C], n_votes=n_votes, agree_votes=agree), n_resamples=300))
    shares = [3 / 3, 2 / 3, 2 / 3, 3 / 3, 3 / 5]  # the n_votes == 1 row is left out
    same(m.loc["self_consistency"], bootstrap_ci(shares, n_resamples=300))
    assert m.loc["self_consistency", "value"] == pytest.approx(np.mean(shares))
    same(m.loc["unanimous"], wilson(2, 5))


def test_failed_gradings_are_excluded_and_counted_by_graded():
    predicted = PREDICTED[:8] + [None, None]
    m = table(agreement(frame(ACTUAL, predicted), n_resamples=100))
    same(m.loc["graded"], wilson(8, 10))
    same(m.loc["exact_accuracy"], wilson(6, 8))  # s9 (off by one) and s10 (exact) failed
    assert m.loc["qwk", "n"] == 8 and m.loc["unanimous", "n"] == 8
    assert set(agreement(frame(ACTUAL, [None] * 10), n_resamples=50)["metric"]) == {"graded"}


def test_csv_nans_read_as_missing(tmp_path):
    df = frame(ACTUAL, PREDICTED[:9] + [None])
    df.to_csv(tmp_path / "predictions.csv", index=False)
    back = pd.read_csv(tmp_path / "predictions.csv")
    pd.testing.assert_frame_equal(agreement(back, n_resamples=50), agreement(df, n_resamples=50))


def test_human_rater_and_its_absence():
    actual_2 = [E, C, L, L, N, E, C, L, N, E]  # the second human differs from the first on s3 and s10
    m = agreement(frame(ACTUAL, PREDICTED, actual_2=actual_2), n_resamples=100)
    h = table(m, rater="human")
    exact = sum(a == b for a, b in zip(ACTUAL, actual_2))
    same(h.loc["exact_accuracy"], wilson(exact, 10))
    assert h.loc["qwk", "value"] == pytest.approx(cohen_kappa_score(ACTUAL, actual_2, labels=list(LABELS), weights="quadratic"))
    assert not {"graded", "self_consistency", "unanimous"} & set(h.index)  # grader-only figures
    assert "human" not in set(agreement(frame(ACTUAL, PREDICTED), n_resamples=50)["rater"])


def test_pools():
    two = pd.concat([frame(ACTUAL[:5], PREDICTED[:5], concept="Loops"), frame(ACTUAL[5:], PREDICTED[5:], concept="Functions"),
                     frame(ACTUAL, ACTUAL, lesson="L2", concept="Events")], ignore_index=True)
    m = agreement(two, n_resamples=100)
    keys = list(dict.fromkeys(zip(m["lesson"], m["concept"])))
    assert keys == [("L1", "Loops"), ("L1", "Functions"), ("L1", POOLED), ("L2", "Events"), ("L2", POOLED), (POOLED, POOLED)]
    same(table(m, "L1", "Loops").loc["exact_accuracy"], wilson(4, 5))
    same(table(m, "L1", "Functions").loc["exact_accuracy"], wilson(3, 5))
    same(table(m, "L1", POOLED).loc["exact_accuracy"], wilson(7, 10))
    same(table(m, POOLED, POOLED).loc["exact_accuracy"], wilson(17, 20))
    pooled_qwk = cohen_kappa_score(ACTUAL + ACTUAL, PREDICTED + ACTUAL, labels=list(LABELS), weights="quadratic")
    assert table(m, POOLED, POOLED).loc["qwk", "value"] == pytest.approx(pooled_qwk)
    one_lesson = agreement(frame(ACTUAL, PREDICTED), n_resamples=50)
    assert POOLED not in set(one_lesson["lesson"]) and POOLED in set(one_lesson["concept"])


def test_bad_input_names_the_fix():
    with pytest.raises(ValueError, match=r"column 'actual' holds \['Some Evidence'\], not in the label set"):
        agreement(frame([E, "Some Evidence"], [E, C]))
    with pytest.raises(ValueError, match=r"lacks the columns \['agree_votes'\]"):
        agreement(frame(ACTUAL, PREDICTED).drop(columns="agree_votes"))


def test_custom_label_set():
    ls = LabelSet(labels=("good", "ok", "bad"), n_pass=1)
    m = table(agreement(frame(["good", "ok", "bad", "ok"], ["good", "bad", "bad", "good"]), label_set=ls, n_resamples=50))
    same(m.loc["exact_accuracy"], wilson(2, 4))
    same(m.loc["pass_fail_accuracy"], wilson(3, 4))  # only "good" passes: s4 (ok -> good) crosses
    same(m.loc["off_by_one"], wilson(2, 4))


def crafted(*rows):
    "(concept, metric, value, ci_low) rows of a grader's metrics table for lesson L."
    return pd.DataFrame([{"lesson": "L", "concept": c, "rater": "grader", "metric": m, "value": v, "ci_low": lo, "ci_high": 1.0, "n": 24}
                         for c, m, v, lo in rows] + [{"lesson": "L", "concept": POOLED, "rater": "grader", "metric": "qwk",
                                                      "value": 0.0, "ci_low": 0.0, "ci_high": 1.0, "n": 24}], columns=METRICS_COLUMNS)


BOUNDARY = crafted(("at_high", "pass_fail_accuracy", 0.9, 0.80), ("at_high", "qwk", 0.8, 0.60),
                   ("qwk_short", "pass_fail_accuracy", 0.9, 0.80), ("qwk_short", "qwk", 0.8, 0.5999),
                   ("at_medium", "pass_fail_accuracy", 0.85, 0.70), ("at_medium", "qwk", 0.7, 0.40),
                   ("below", "pass_fail_accuracy", 0.8499, 0.6999), ("below", "qwk", 0.9, 0.9),
                   ("nan_qwk", "pass_fail_accuracy", 0.80, 0.95), ("nan_qwk", "qwk", np.nan, np.nan),
                   ("all_failed", "graded", 0.0, 0.0))


def test_confidence_levels_ci_rule_boundaries():
    assert confidence_levels(BOUNDARY) == {"L": {"at_high": "HIGH", "qwk_short": "MEDIUM", "at_medium": "MEDIUM", "below": "LOW",
                                                 "nan_qwk": "LOW", "all_failed": "LOW"}}
    strict = confidence_levels(BOUNDARY, high_pass_fail=0.81, medium_qwk=0.41)
    assert strict["L"]["at_high"] == "MEDIUM" and strict["L"]["at_medium"] == "LOW"


def test_confidence_levels_codeorg_rule_boundaries():
    assert confidence_levels(BOUNDARY, rule="codeorg", lesson="L") == {
        "L": {"at_high": "HIGH", "qwk_short": "HIGH", "at_medium": "HIGH", "below": "MEDIUM", "nan_qwk": "MEDIUM", "all_failed": "LOW"}}
    exact = crafted(("a", "pass_fail_accuracy", 0.85, 0), ("b", "pass_fail_accuracy", 0.80, 0), ("c", "pass_fail_accuracy", 0.7999, 0))
    assert confidence_levels(exact, "codeorg")["L"] == {"a": "HIGH", "b": "MEDIUM", "c": "LOW"}
    with pytest.raises(ValueError, match="rule must be 'ci'"):
        confidence_levels(BOUNDARY, rule="fixed")
    with pytest.raises(ValueError, match=r"lesson 'L9' is not in the metrics; its lessons are \['L'\]"):
        confidence_levels(BOUNDARY, lesson="L9")


def test_confidence_details_are_json_ready():
    import json
    d = confidence_details(BOUNDARY)["L"]
    assert d["at_high"]["level"] == "HIGH" and d["at_high"]["basis"] == "ci_low"
    assert d["at_high"]["qwk"] == {"value": 0.8, "ci_low": 0.6, "ci_high": 1.0, "n": 24}
    assert d["nan_qwk"]["qwk"]["ci_low"] is None and d["all_failed"]["pass_fail_accuracy"] is None
    assert d["at_high"]["thresholds"]["HIGH"] == {"pass_fail_accuracy": 0.8, "qwk": 0.6}
    json.loads(json.dumps(d, allow_nan=False))


def test_qwk_gate():
    fails = qwk_gate(BOUNDARY, 0.6)
    assert fails["concept"].tolist() == ["qwk_short", "at_medium", "nan_qwk", "all_failed"]  # pools never gate
    assert list(fails.columns) == METRICS_COLUMNS
    assert qwk_gate(BOUNDARY, 0.4)["concept"].tolist() == ["nan_qwk", "all_failed"]
    assert qwk_gate(BOUNDARY[BOUNDARY["concept"].isin(["at_high", "below"])], 0.6).empty


def test_confusion_tables_counts():
    two = pd.concat([frame(ACTUAL, PREDICTED), frame(ACTUAL, ACTUAL, lesson="L2", concept="Events")], ignore_index=True)
    t = confusion_tables(two, LabelSet())
    assert list(t) == [("L1", "Loops"), ("L1", POOLED), ("L2", "Events"), ("L2", POOLED), (POOLED, POOLED)]
    loops = t[("L1", "Loops")]
    assert loops.index.tolist() == list(LABELS) and loops.columns.tolist() == list(LABELS)
    assert (loops.index.name, loops.columns.name) == ("actual", "predicted")
    assert loops.to_numpy().tolist() == [[1, 1, 0, 0], [0, 3, 1, 0], [0, 0, 2, 0], [0, 0, 1, 1]]
    assert t[(POOLED, POOLED)].to_numpy().sum() == 20 and np.trace(t[("L2", "Events")].to_numpy()) == 10
    pf = confusion_tables(two, LabelSet(), pass_fail=True)[("L1", "Loops")]
    assert pf.columns.tolist() == ["Extensive Evidence/Convincing Evidence", "Limited Evidence/No Evidence"]
    assert pf.to_numpy().tolist() == [[5, 1], [0, 4]]
    human = confusion_tables(frame(ACTUAL, PREDICTED, actual_2=ACTUAL), LabelSet(), rater="human")
    assert np.trace(human[("L1", "Loops")].to_numpy()) == 10 and human[("L1", "Loops")].columns.name == "actual_2"


def test_summary_table():
    m = agreement(frame(ACTUAL, PREDICTED, actual_2=ACTUAL), n_resamples=100)
    s = summary_table(m)
    assert s.columns.tolist() == ["lesson", "concept", "n", "exact", "pass/fail", "kappa", "qwk", "human qwk"]
    assert s[["lesson", "concept"]].values.tolist() == [["L1", "Loops"], ["L1", POOLED]]
    w = wilson(7, 10)
    assert s.loc[0, "exact"] == f"0.70 [{w.ci_low:.2f}, {w.ci_high:.2f}]" and s.loc[0, "n"] == 10
    assert s.loc[0, "human qwk"].startswith("1.00")
    assert summary_table(agreement(frame([C] * 5, [C] * 5), n_resamples=50)).loc[0, "kappa"] == "n/a"
