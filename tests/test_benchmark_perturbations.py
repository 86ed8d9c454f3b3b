"""Perturbations: deterministic per instance id and across processes (string seeds, not hash()), chains apply in order,
augment honours the DataAugmenterSpec options, the perturbations= syntax, and robustness/fairness statistics against
values computed by hand."""
import json
import os
import random
import subprocess
import sys

import numpy as np
import pandas as pd
import pytest

from research_kit.benchmark.perturbations import (PERTURBATION_DATA, PRESETS, Chain, augment, make_perturbation, parse_perturbations,
                                                  perturbation_registry, perturbation_stats)
from research_kit.benchmark.specs import CORRECT_TAG, DataAugmenterSpec, Instance, PerturbationSpec, Reference
from research_kit.stats import paired_bootstrap

TEXT = ("Emily said he is not sure whether the results are correct, because his samples were small; "
        "Greg told her they will receive the library's answer tomorrow.")
NAMES = [make_perturbation(s).name for s in PRESETS["all"]] + ["expansion", "misspelling(prob=0.5)", "filler(prob=0.5)",
                                                                 "gender(mode=to_male;prob=0.5;terms=true)"]
IDS = ["id0", "id1", "id17", "x-42"]


def _outputs(names, ids, seed=0):
    return {f"{n}|{i}": make_perturbation(n).apply(Instance(input=TEXT, id=i), seed).input for n in names for i in ids}


def test_every_perturbation_is_registered_and_named_as_it_parses():
    assert {"lowercase", "contraction", "expansion", "extra_space", "misspelling", "filler", "gender", "person_name", "dialect",
            "chain"} <= set(perturbation_registry())
    for n in NAMES: assert make_perturbation(n).name == n


def test_same_id_same_output_other_id_other_output():
    a, b = _outputs(NAMES, IDS), _outputs(NAMES, IDS)
    assert a == b
    for n in ("misspelling(prob=0.5)", "filler(prob=0.5)", "extra_space", "person_name"):
        assert len({a[f"{n}|{i}"] for i in IDS}) > 1, n  # the id reaches the seed
    assert _outputs(["filler(prob=0.5)"], ["id1"], seed=1) != _outputs(["filler(prob=0.5)"], ["id1"], seed=0)


@pytest.mark.parametrize("hashseed", ["0", "12345"])
def test_outputs_are_the_same_in_another_process(hashseed):
    code = ("import json, sys; sys.path.insert(0, %r); from test_benchmark_perturbations import _outputs, NAMES, IDS; "
            "print(json.dumps(_outputs(NAMES, IDS)))" % os.path.dirname(__file__))
    env = {**os.environ, "PYTHONHASHSEED": hashseed}
    out = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True, timeout=60, check=True).stdout
    assert json.loads(out) == _outputs(NAMES, IDS)


def test_chain_applies_steps_in_order_and_joins_names():
    inst = Instance(input="I am sure.", id="id1")
    ec, ce = make_perturbation("expansion>contraction"), make_perturbation("contraction>expansion")
    assert (ec.name, ce.name) == ("expansion>contraction", "contraction>expansion")
    assert (ec.apply(inst).input, ce.apply(inst).input) == ("I'm sure.", "I am sure.")
    assert make_perturbation("contraction>lowercase").apply(inst).input == "i'm sure."
    spec = PerturbationSpec(name="chain", args={"steps": ["lowercase", {"name": "misspelling", "args": {"prob": 1}}]})
    assert make_perturbation(spec).name == "lowercase>misspelling(prob=1.0)"
    assert Chain(["lowercase", "misspelling(prob=1)"]).perturb("THE", random.Random(0)) in ("teh", "th", "hte")  # typos of "the"
    assert Chain(["misspelling(prob=1)", "lowercase"]).perturb("THE", random.Random(0)) in ("teh", "th", "hte")


def test_apply_keeps_id_sets_perturbation_and_leaves_references_by_default():
    inst = Instance(input="Where does Emily live? He knows.", id="id5",
                    references=(Reference(output="Emily lives in Leeds", tags=(CORRECT_TAG,)),))
    out = make_perturbation("person_name>gender").apply(inst)
    assert (out.id, out.perturbation, out.references) == ("id5", "person_name>gender", inst.references)
    assert "Emily" not in out.input and "She knows" in out.input
    swapped = make_perturbation("person_name(references=true)").apply(inst)
    assert swapped.input.split()[2] == swapped.references[0].output.split()[0] != "Emily"
    assert swapped.references[0].tags == (CORRECT_TAG,)


def _insts():
    return [Instance(input="Train A", split="train", id="t0"), Instance(input="Test B", id="e0"),
            Instance(input="Valid C", split="valid", id="v0")]


@pytest.mark.parametrize("opts, want", [
    ({}, [("t0", None), ("e0", None), ("e0", "lowercase"), ("e0", "filler"), ("v0", None), ("v0", "lowercase"), ("v0", "filler")]),
    ({"should_include_original_eval_instances": False}, [("t0", None), ("e0", "lowercase"), ("e0", "filler"), ("v0", "lowercase"), ("v0", "filler")]),
    ({"should_augment_eval_instances": False, "should_include_original_eval_instances": False}, [("t0", None), ("e0", None), ("v0", None)]),
    ({"should_augment_train_instances": True}, [("t0", None), ("t0", "lowercase"), ("t0", "filler"), ("e0", None), ("e0", "lowercase"),
                                                ("e0", "filler"), ("v0", None), ("v0", "lowercase"), ("v0", "filler")]),
    ({"should_augment_train_instances": True, "should_include_original_train": False, "should_augment_eval_instances": False},
     [("t0", "lowercase"), ("t0", "filler"), ("e0", None), ("v0", None)]),
])
def test_augment_honours_the_spec(opts, want):
    spec = DataAugmenterSpec(perturbation_specs=parse_perturbations("lowercase+filler"), **opts)
    got = augment(_insts(), spec)
    assert [(i.id, i.perturbation) for i in got] == want


def test_augment_yields_unchanged_copies_and_rejects_repeats():
    got = augment([Instance(input="123", id="a")], DataAugmenterSpec(perturbation_specs=parse_perturbations("lowercase")))
    assert [(i.input, i.perturbation) for i in got] == [("123", None), ("123", "lowercase")]
    with pytest.raises(ValueError, match="listed twice"):
        augment(_insts(), DataAugmenterSpec(perturbation_specs=(PerturbationSpec(name="lowercase"),) * 2))


def test_parse_presets_chains_and_args():
    assert parse_perturbations("robustness") == PRESETS["robustness"]
    assert parse_perturbations("all") == PRESETS["robustness"] + PRESETS["fairness"]
    assert parse_perturbations("fairness+lowercase")[-1] == PerturbationSpec(name="lowercase")
    assert parse_perturbations("misspelling(prob=0.2)+gender(mode=to_male; terms=true)") == (
        PerturbationSpec(name="misspelling", args={"prob": 0.2}), PerturbationSpec(name="gender", args={"mode": "to_male", "terms": True}))
    (chain,) = parse_perturbations("lowercase > extra_space(max_spaces=3)")
    assert chain == PerturbationSpec(name="chain", args={"steps": [{"name": "lowercase", "args": {}},
                                                                   {"name": "extra_space", "args": {"max_spaces": 3}}]})
    assert parse_perturbations("lowercase+robustness") == PRESETS["robustness"]  # repeats dropped, first kept
    assert "," not in "".join(make_perturbation(s).name for s in PRESETS["all"])  # names fit inside a run entry


@pytest.mark.parametrize("text, msg", [
    ("lowercas", "did you mean 'lowercase'"), ("misspelling(prob=2)", "prob must be a number from 0 to 1"),
    ("misspelling(prb=0.2)", "no argument 'prb' (did you mean 'prob'?); misspelling takes prob=0.1"), ("misspelling(0.2)", "is not arg=value"),
    ("robustness>lowercase", "cannot be a chain step"), ("lowercase+", "cannot read ''"), ("", "empty"),
    ("gender(mode=female)", "mode must be one of to_female, to_male"), ("person_name(source=martian)", "source must be one of"),
])
def test_parse_errors_show_the_syntax(text, msg):
    with pytest.raises(ValueError) as e: parse_perturbations(text)
    assert msg in str(e.value)
    assert "perturbations=ITEM+ITEM" in str(e.value) or msg == "empty"


def _frame():
    # instances a..e; the original, lowercase and filler; instance a has two train trials for the original
    rows = [("a", None, 1), ("a", None, 0), ("a", "lowercase", 0), ("a", "filler", 1),
            ("b", np.nan, 1), ("b", "lowercase", 0), ("b", "filler", 1),
            ("c", None, 0), ("c", "lowercase", 0), ("c", "filler", 1),
            ("d", None, 1), ("d", "lowercase", 1), ("d", "filler", 0),
            ("e", None, 1), ("e", "lowercase", 0), ("e", "filler", np.nan)]
    return pd.DataFrame([{"instance_id": i, "perturbation": p, "split": "test", "em": v} for i, p, v in rows])


def test_perturbation_stats_against_hand_computed_values():
    stats = {(s.name, s.perturbation): s for s in perturbation_stats(_frame(), ["em"])}
    orig = np.array([0.5, 1, 0, 1, 1])  # a: mean of its two trials
    low, fil = np.array([0.0, 0, 0, 1, 0]), np.array([1.0, 1, 1, 0, np.nan])
    worst = np.array([0.0, 0, 0, 0, 0])  # min over original, lowercase, filler (filler's NaN skipped)
    assert list(stats) == [("em", "lowercase"), ("em", "filler"), ("em", "worst"), ("em_drop", "worst"), ("em_gap", "lowercase"),
                           ("em_gap", "filler")]
    assert stats["em", "lowercase"].mean == pytest.approx(0.2) and stats["em", "lowercase"].n == 5
    assert stats["em", "lowercase"].method == "wilson"
    assert stats["em", "filler"].mean == pytest.approx(0.75) and stats["em", "filler"].n == 4
    assert stats["em", "worst"].mean == 0 and stats["em", "worst"].n == 5
    drop = stats["em_drop", "worst"]
    assert drop.mean == pytest.approx(orig.mean() - worst.mean()) and drop.method == "paired-bootstrap"
    ref = paired_bootstrap(orig, worst, seed=0)
    assert (drop.ci_low, drop.ci_high) == pytest.approx((ref.ci_low, ref.ci_high))
    assert stats["em_gap", "lowercase"].mean == pytest.approx(np.mean(low - orig))
    assert stats["em_gap", "filler"].mean == pytest.approx(np.nanmean(fil - orig)) and stats["em_gap", "filler"].n == 4
    assert all(s.split == "test" and s.sub_split is None for s in stats.values())


def test_perturbation_stats_per_split_worst_of_and_without_originals():
    df = pd.concat([_frame(), _frame().assign(split="valid")])
    stats = perturbation_stats(df, ["em"], worst_of=["filler"])
    assert [s.split for s in stats] == ["test"] * 6 + ["valid"] * 6
    worst = next(s for s in stats if s.name == "em" and s.perturbation == "worst")
    assert worst.mean == pytest.approx(np.mean([0.5, 1, 0, 0, 1]))  # min over original and filler only
    only = perturbation_stats(_frame().dropna(subset=["perturbation"]), ["em"])
    assert [(s.name, s.perturbation) for s in only] == [("em", "lowercase"), ("em", "filler")]
    with pytest.raises(ValueError, match="no column 'f1'"): perturbation_stats(_frame(), ["f1"])


def test_a_model_failing_only_on_lowercase_shows_a_drop_with_a_ci_above_zero():
    insts = [Instance(input=f"Question {i}: what is {i} plus 1?", id=f"id{i}") for i in range(40)]
    spec = DataAugmenterSpec(perturbation_specs=parse_perturbations("robustness"))
    rows = [{"instance_id": i.id, "perturbation": i.perturbation, "split": i.split, "em": float(i.input != i.input.lower())}
            for i in augment(insts, spec)]
    stats = {(s.name, s.perturbation): s for s in perturbation_stats(pd.DataFrame(rows), ["em"])}
    assert stats["em_drop", "worst"].mean == 1 and stats["em_drop", "worst"].ci_low > 0
    assert stats["em_gap", "lowercase"].ci_high < 0 and stats["em_gap", "filler"].mean == 0


def test_data_tables_ship_and_are_well_formed():
    typos = json.loads((PERTURBATION_DATA / "misspellings.json").read_text())
    assert len(typos) >= 300 and all(w.islower() and ts and w not in ts for w, ts in typos.items())
    names = json.loads((PERTURBATION_DATA / "person_names.json").read_text())
    assert all(set(g) == {"female", "male"} and len(g["female"]) == len(g["male"]) == 20 for g in names.values())
    assert len(json.loads((PERTURBATION_DATA / "dialect_aae.json").read_text())) >= 40
