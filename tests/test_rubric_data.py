"""research_kit.rubric.data on small trees: every validation error names its file, field and allowed values; a
memory:// URL root loads like a local one (non-local roots); a release round trip; natural order, max_students,
student_ids; a second human's labels (issue 15, items 1, 2 and 6)."""
import json
import logging
import math
import uuid

import fsspec
import pytest

from research_kit.rubric.data import (DEFAULT_LABELS, Dataset, Experiment, LabelSet, Params, RubricFormatError, lessons,
                                      load_dataset, load_experiment, open_root, write_release)

HEADER = "Key Concept,Instructions,Extensive Evidence,Convincing Evidence,Limited Evidence,No Evidence\n"
RUBRIC = HEADER + "Loops,List each loop.,Nested,One loop,Dead loop,None\nNaming,List the names.,All good,Most good,Few good,None good\n"
ROWS = [{"Key Concept": c, "Observations": "-", "Label": "No Evidence", "Reason": "-"} for c in ("Loops", "Naming")]
EXP, DS = "experiments/e1/L1", "datasets/d1/L1"


def base_tree() -> dict[str, str]:
    "A valid root: experiment e1 and dataset d1, lesson L1, three students (student_10 sorts last), one example."
    return {f"{EXP}/params.json": json.dumps({"model": "openai/m", "num-responses": "3", "temperature": "0.2", "response-type": "json"}),
            f"{EXP}/system_prompt.txt": "Grade the program.",
            f"{EXP}/standard_rubric.csv": RUBRIC,
            f"{EXP}/examples/1.js": "for (;;) {}",
            f"{EXP}/examples/1.json": json.dumps(ROWS),
            f"{DS}/student_10.js": "var a;", f"{DS}/student_2.js": "var b;", f"{DS}/student_1.py": "print('é')",
            f"{DS}/actual_labels.csv": "student,Loops,Naming\nstudent_1,Extensive Evidence,No Evidence\n"
                                       "student_2,Limited Evidence,\nstudent_10,No Evidence,Convincing Evidence\n",
            f"{DS}/README.md": "notes", f"{DS}/.DS_Store": "junk", f"{DS}/meta.json": "{}"}


def write_tree(root, changes: dict | None = None, drop=()) -> str:
    "Write the base tree, with `changes` ({path: text}) applied and `drop` paths left out, under a local folder or an fsspec URL."
    fs, base = open_root(root)
    files = {k: v for k, v in {**base_tree(), **(changes or {})}.items() if k not in drop}
    for rel, text in files.items():
        fs.makedirs(f"{base}/{rel}".rsplit("/", 1)[0], exist_ok=True)
        fs.pipe_file(f"{base}/{rel}", text.encode("utf-8"))
    return str(root)


def fails(call, *parts):
    "Run `call`, expect a RubricFormatError whose message holds every part; return the message."
    with pytest.raises(RubricFormatError) as e:
        call()
    msg = str(e.value)
    for p in parts:
        assert p in msg, f"{p!r} not in {msg!r}"
    return msg


# --- experiments -------------------------------------------------------------------------------------------------

def test_experiment_loads(tmp_path):
    exp = load_experiment(write_tree(tmp_path), "e1", "L1")
    assert (exp.concepts, exp.params.num_responses, exp.params.temperature, exp.confidence) == (["Loops", "Naming"], 3, 0.2, None)
    assert exp.examples == [("for (;;) {}", json.dumps(ROWS))] and exp.system_prompt == "Grade the program." and exp.rubric == RUBRIC
    assert lessons(tmp_path, "experiments", "e1") == ["L1"]


def test_unknown_params_key(tmp_path):
    root = write_tree(tmp_path, {f"{EXP}/params.json": '{"model": "m", "temprature": 0.2}'})
    fails(lambda: load_experiment(root, "e1", "L1"), "params.json", "field: temprature", "'num-responses'", "'remove-comments'",
          "rename it to 'temperature'")


@pytest.mark.parametrize("key,value,allowed", [("num-responses", "three", "an integer >= 1"), ("temperature", [1], "a number >= 0"),
                                               ("remove-comments", "yes", "true/false or 0/1"), ("response-type", "xml", "'tsv' or 'json'")])
def test_wrong_params_value(tmp_path, key, value, allowed):
    root = write_tree(tmp_path, {f"{EXP}/params.json": json.dumps({"model": "m", key: value})})
    fails(lambda: load_experiment(root, "e1", "L1"), "params.json", f"field: {key}", allowed)


def test_code_org_params_keys(caplog):
    d = {"model": "bedrock.anthropic.claude-3-5-sonnet-20240620-v1:0", "remove-comments": "1", "num-responses": "3", "num-passing-grades": "2",
         "temperature": "0.2", "response-type": "json", "code-feature-extractor": ["Loops"], "lesson": "csd3-2023-L11"}
    with caplog.at_level(logging.INFO, logger="research_kit.rubric.data"):
        p = Params.from_dict(d)
    assert (p.remove_comments, p.num_responses, p.code_feature_extractor, p.lesson) == (True, 3, ["Loops"], "csd3-2023-L11")
    assert "code-feature-extractor is not implemented" in caplog.text and "num-passing-grades" in caplog.text
    assert Params.from_dict(p.to_dict()) == p and "max-tokens" not in p.to_dict()
    fails(lambda: Params.from_dict({"temperature": 0}, file="x/params.json"), "x/params.json", "field: model", "'model' is missing")


@pytest.mark.parametrize("missing", ["params.json", "system_prompt.txt", "standard_rubric.csv"])
def test_missing_experiment_file(tmp_path, missing):
    root = write_tree(tmp_path, drop=[f"{EXP}/{missing}"])
    fails(lambda: load_experiment(root, "e1", "L1"), f"L1/{missing}", f"field: {missing}", "'params.json', 'system_prompt.txt', 'standard_rubric.csv'")


def test_rubric_missing_column(tmp_path):
    root = write_tree(tmp_path, {f"{EXP}/standard_rubric.csv": RUBRIC.replace(",Limited Evidence", "", 1)})
    fails(lambda: load_experiment(root, "e1", "L1"), "standard_rubric.csv", "field: Limited Evidence",
          "'Key Concept', 'Instructions', 'Extensive Evidence', 'Convincing Evidence', 'Limited Evidence', 'No Evidence'")
    ls = LabelSet(("Pass", "Fail"), n_pass=1)  # the rubric's columns follow the label set
    fails(lambda: load_experiment(root, "e1", "L1", label_set=ls), "standard_rubric.csv", "field: Pass", "'Pass', 'Fail'")


def test_rubric_duplicate_concept(tmp_path):
    root = write_tree(tmp_path, {f"{EXP}/standard_rubric.csv": RUBRIC + "Loops,Again.,a,b,c,d\n"})
    fails(lambda: load_experiment(root, "e1", "L1"), "standard_rubric.csv", "field: Key Concept", "'Loops' is repeated", "each key concept once")


def test_example_without_response(tmp_path):
    root = write_tree(tmp_path, {f"{EXP}/examples/2.js": "x"})
    fails(lambda: load_experiment(root, "e1", "L1"), "examples/2.js", "field: examples", "2.json", "write 2.json")
    tsv = write_tree(tmp_path / "tsv", {f"{EXP}/params.json": '{"model": "m", "response-type": "tsv"}'})
    fails(lambda: load_experiment(tsv, "e1", "L1"), "examples/1.js", "1.tsv", '1.json is there: set "response-type": "json"')


def test_example_response_other_concepts(tmp_path):
    rows = [dict(r, **{"Key Concept": "Loopz"}) if r["Key Concept"] == "Loops" else r for r in ROWS]
    root = write_tree(tmp_path, {f"{EXP}/examples/1.json": json.dumps(rows)})
    fails(lambda: load_experiment(root, "e1", "L1"), "examples/1.json", "field: Key Concept", "'Loops', 'Naming'", "'Loopz'")
    tsv = {f"{EXP}/params.json": '{"model": "m", "response-type": "tsv"}', f"{EXP}/examples/1.tsv": "Key Concept\tLabel\nLoops\tNo Evidence\n"}
    root = write_tree(tmp_path / "tsv", tsv)
    fails(lambda: load_experiment(root, "e1", "L1"), "examples/1.tsv", "field: Key Concept", "'Loops', 'Naming'", "'Naming'")
    ok = write_tree(tmp_path / "ok", {**tsv, f"{EXP}/examples/1.tsv": "Key Concept\tLabel\nNaming\tNo Evidence\nLoops\tNo Evidence\n"})
    assert len(load_experiment(ok, "e1", "L1").examples) == 1


def test_missing_names(tmp_path):
    root = write_tree(tmp_path)
    fails(lambda: load_experiment(root, "e9", "L1"), "experiments/e9", "field: experiment", "'e1'")
    fails(lambda: load_dataset(root, "d1", "L7"), "datasets/d1/L7", "field: lesson", "'L1'")


# --- datasets ----------------------------------------------------------------------------------------------------

def test_dataset_natural_order_and_selection(tmp_path):
    root = write_tree(tmp_path)
    ds = load_dataset(root, "d1", "L1", concepts=["Naming", "Loops"])
    assert list(ds.artifacts) == ["student_1", "student_2", "student_10"] and list(ds.labels.index) == list(ds.artifacts)
    assert ds.files == {"student_1": "student_1.py", "student_2": "student_2.js", "student_10": "student_10.js"}
    assert ds.artifacts["student_1"] == "print('é')" and ds.labels.columns.tolist() == ["Naming", "Loops"] and ds.labels.index.name == "student"
    assert math.isnan(ds.labels.loc["student_2", "Naming"]) and ds.labels_2 is None
    assert list(load_dataset(root, "d1", "L1", max_students=2).artifacts) == ["student_1", "student_2"]
    picked = load_dataset(root, "d1", "L1", student_ids=["student_10", "student_2"])
    assert list(picked.artifacts) == ["student_2", "student_10"] and list(picked.labels.index) == ["student_2", "student_10"]
    assert list(load_dataset(root, "d1", "L1", student_ids=["student_10", "student_2"], max_students=1).artifacts) == ["student_2"]


def test_artifacts_read_as_utf8_with_replacement(tmp_path):
    root = write_tree(tmp_path)
    (tmp_path / DS / "student_2.js").write_bytes(b"var s = '\xff';")
    assert load_dataset(root, "d1", "L1").artifacts["student_2"] == "var s = '\ufffd';"


def test_student_id_without_artifact(tmp_path):
    root = write_tree(tmp_path)
    fails(lambda: load_dataset(root, "d1", "L1", student_ids=["student_1", "student_3"]), "datasets/d1/L1", "field: --student-ids",
          "'student_3' has no artifact", "'student_1', 'student_2', 'student_10'")


def test_artifact_without_labels(tmp_path):
    root = write_tree(tmp_path, {f"{DS}/student_11.js": "var c;"})
    fails(lambda: load_dataset(root, "d1", "L1"), "actual_labels.csv", "field: student", "student_11.js has no row for student 'student_11'",
          "'student_1', 'student_2', 'student_10'")
    assert list(load_dataset(root, "d1", "L1", max_students=3).artifacts) == ["student_1", "student_2", "student_10"]  # only the chosen


def test_labels_without_student_column(tmp_path):
    root = write_tree(tmp_path, {f"{DS}/actual_labels.csv": "id,Loops,Naming\nstudent_1,,\n"})
    fails(lambda: load_dataset(root, "d1", "L1", concepts=["Loops", "Naming"]), "actual_labels.csv", "field: student", "no 'student' column",
          "allowed: 'student', 'Loops', 'Naming'")


def test_label_outside_label_set(tmp_path):
    root = write_tree(tmp_path, {f"{DS}/actual_labels.csv": "student,Loops,Naming\nstudent_1,No Evidence,Excellent\nstudent_2,,\nstudent_10,,\n"})
    fails(lambda: load_dataset(root, "d1", "L1", concepts=["Loops", "Naming"]), "actual_labels.csv", "field: Naming", "student 'student_1'",
          "'Excellent'", ", ".join(repr(l) for l in DEFAULT_LABELS))
    ok = load_dataset(root, "d1", "L1", label_set=LabelSet(("Excellent", "No Evidence"), n_pass=1))
    assert ok.labels.loc["student_1", "Naming"] == "Excellent"


def test_label_columns_differ_from_rubric(tmp_path):
    root = write_tree(tmp_path, {f"{DS}/actual_labels.csv": "student,Loops,Names\nstudent_1,,\nstudent_2,,\nstudent_10,,\n"})
    fails(lambda: load_dataset(root, "d1", "L1", concepts=["Loops", "Naming"]), "actual_labels.csv", "field: Names", "'Loops', 'Naming'")
    assert load_dataset(root, "d1", "L1").labels.columns.tolist() == ["Loops", "Names"]  # without concepts: the file's columns


def test_missing_labels_file(tmp_path):
    root = write_tree(tmp_path, drop=[f"{DS}/actual_labels.csv"])
    fails(lambda: load_dataset(root, "d1", "L1"), "L1/actual_labels.csv", "field: actual_labels.csv", "'actual_labels.csv'")


def test_second_human_labels(tmp_path):
    root = write_tree(tmp_path, {f"{DS}/actual_labels_2.csv": "student,Naming,Loops\nstudent_10,No Evidence,Limited Evidence\n"})
    ds = load_dataset(root, "d1", "L1", concepts=["Loops", "Naming"])
    assert ds.labels_2.columns.tolist() == ["Loops", "Naming"] and list(ds.labels_2.index) == list(ds.artifacts)
    assert ds.labels_2.loc["student_10", "Loops"] == "Limited Evidence" and ds.labels_2.loc["student_1"].isna().all()
    bad = write_tree(tmp_path / "bad", {f"{DS}/actual_labels_2.csv": "student,Loops,Naming\nstudent_1,Great,\n"})
    fails(lambda: load_dataset(bad, "d1", "L1"), "actual_labels_2.csv", "field: Loops", "'Great'")


# --- roots and releases --------------------------------------------------------------------------------------------

@pytest.fixture
def memory_root():
    "A fresh memory:// root, removed afterwards (fsspec's memory filesystem is one store per process)."
    url = f"memory://rubric-{uuid.uuid4().hex}"
    yield url
    fs, base = open_root(url)
    if fs.exists(base): fs.rm(base, recursive=True)


def test_memory_url_root(memory_root):
    write_tree(memory_root)
    exp = load_experiment(memory_root, "e1", "L1")
    ds = load_dataset(memory_root, "d1", "L1", concepts=exp.concepts, max_students=2)
    assert exp.path == f"{memory_root.replace('memory://', 'memory:///')}/{EXP}" and len(exp.examples) == 1
    assert list(ds.artifacts) == ["student_1", "student_2"] and ds.labels.loc["student_1", "Loops"] == "Extensive Evidence"
    assert lessons(memory_root, "datasets", "d1") == ["L1"]
    fails(lambda: load_dataset(memory_root, "d1", "L1", student_ids=["nobody"]), "memory:///", "field: --student-ids")


def test_release_round_trip(tmp_path, memory_root):
    exp = load_experiment(write_tree(tmp_path), "e1", "L1")
    conf, details = {"Loops": "HIGH", "Naming": "LOW"}, {"Loops": {"qwk": 0.9, "ci_low": 0.82}}
    for root in (tmp_path, memory_root):
        where = write_release(root, exp, "r1", conf, details)
        rel = load_experiment(root, "r1", "L1", kind="releases")
        assert isinstance(rel, Experiment) and rel.path == where and rel.confidence == conf
        assert (rel.params, rel.system_prompt, rel.rubric, rel.examples, rel.concepts) == (exp.params, exp.system_prompt, exp.rubric, exp.examples, exp.concepts)
        fs, base = open_root(root)
        assert json.loads(fs.cat_file(f"{base}/releases/r1/L1/confidence_details.json")) == details
        assert fs.exists(f"{base}/releases/r1/L1/examples/1.js")  # the example files as they were
    write_release(tmp_path, exp, "r1", {"Loops": "MEDIUM", "Naming": "LOW"})  # rewriting a release replaces its levels
    assert load_experiment(tmp_path, "r1", "L1", kind="releases").confidence["Loops"] == "MEDIUM"
    fails(lambda: write_release(tmp_path, exp, "r2", {"Loops": "HIGH", "Naming": "SO-SO"}), "r2/L1/confidence.json", "field: Naming",
          "'HIGH', 'MEDIUM', 'LOW'")
    fails(lambda: load_experiment(tmp_path, "e1", "L1", kind="releases"), "releases", "field: release", "'r1'")


def test_release_without_confidence_is_incomplete(tmp_path):
    root = write_tree(tmp_path, {k.replace("experiments/e1", "releases/r1"): v for k, v in base_tree().items() if k.startswith(EXP)})
    fails(lambda: load_experiment(root, "r1", "L1", kind="releases"), "confidence.json", "field: confidence.json", "'confidence.json'")


def test_open_root_names_missing_package():
    with pytest.raises(ImportError, match="pip install gcsfs"):
        open_root("gs://bucket/rubrics")
    fs, path = open_root("memory://x")
    assert isinstance(fs, fsspec.AbstractFileSystem) and path == "/x"
