"""research_kit.labeling.store under real processes: four writers at once, a writer killed with SIGKILL mid-save,
resuming from a new object, k and gold queues, and the errors a user can cause."""
import random
import signal
import sqlite3
import subprocess
import sys
import time
from pathlib import Path

import pandas as pd
import pytest

from research_kit.labeling.store import Item, LabelStore, item_hash, to_items

ROOT = Path(__file__).resolve().parents[1]

WRITER = """
import sys, time
from research_kit.labeling.store import LabelStore
path, who, n, start = sys.argv[1], sys.argv[2], int(sys.argv[3]), float(sys.argv[4])
time.sleep(max(0.0, start - time.time()))  # all writers begin together
with LabelStore(path) as s:
    hashes = s.add_items([(f"question {i}", f"answer {i}") for i in range(50)])  # every writer adds the same items
    ids = [s.record(hashes[i % 50], who, {"rating": i % 5 + 1}, seconds=0.1) for i in range(n)]
print(" ".join(map(str, ids)))
"""

LOOPER = """
import sys
from research_kit.labeling.store import LabelStore
s = LabelStore(sys.argv[1])
hashes = s.items()["hash"].tolist()
i = 0
while True:  # the parent kills this process
    eid = s.record(hashes[i % len(hashes)], "looper", {"rating": i % 5 + 1, "note": "x" * (i % 200)})
    print(eid, flush=True)
    i += 1
"""


def _python(code: str, *args) -> list[str]:
    return [sys.executable, "-c", code, *map(str, args)]


def _integrity(path: Path) -> str:
    con = sqlite3.connect(path)
    try: return con.execute("PRAGMA integrity_check").fetchone()[0]
    finally: con.close()


def test_four_processes_write_at_once(tmp_path):
    "4 processes create the same store, add the same items and save 250 labels each at once: nothing lost."
    path, start = tmp_path / "shared.sqlite", time.time() + 3
    procs = [subprocess.Popen(_python(WRITER, path, f"w{i}", 250, start), cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
             for i in range(4)]
    outs = [p.communicate(timeout=60) for p in procs]
    assert [p.returncode for p in procs] == [0] * 4, [err[-2000:] for _, err in outs]
    returned = [int(x) for out, _ in outs for x in out.split()]
    assert len(returned) == 1000 and len(set(returned)) == 1000
    with LabelStore(path) as s:
        ev = s.events()
        assert len(ev) == 1000 and set(ev["id"]) == set(returned)
        assert ev.groupby("labeler").size().to_dict() == {f"w{i}": 250 for i in range(4)}
        items = s.items()
        assert items["position"].tolist() == list(range(50))  # the racing adds made each item once
        assert len(s.labels()) == 200  # 4 labelers x 50 items, each one label in force
    assert _integrity(path) == "ok"


def test_killed_mid_save_loses_at_most_that_label(tmp_path):
    "SIGKILL a process that saves labels in a loop: the file is intact and has every save it reported."
    path = tmp_path / "killed.sqlite"
    with LabelStore(path) as s: s.add_items([(f"q{i}", f"a{i}") for i in range(20)])
    rng = random.Random("0:test:kill")
    for trial in range(3):
        with LabelStore(path) as s: before = len(s.events())
        proc = subprocess.Popen(_python(LOOPER, path), cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
        printed, stop_after, deadline = [], rng.randint(30, 70), time.monotonic() + 30
        while len(printed) < stop_after and time.monotonic() < deadline:
            line = proc.stdout.readline()
            if not line: break
            printed.append(int(line))
        time.sleep(rng.uniform(0, 0.005))  # a random moment, most likely inside a save
        proc.send_signal(signal.SIGKILL)
        proc.wait(10)
        # read the rest through the same buffered file readline used: communicate() would read the pipe's fd
        # directly and miss the lines readline had already buffered
        rest, err = proc.stdout.read(), proc.stderr.read()
        printed += [int(x) for x in rest.split()]
        assert proc.returncode == -signal.SIGKILL and len(printed) >= stop_after, err[-2000:]
        assert _integrity(path) == "ok"
        with LabelStore(path) as s:
            ids = set(s.events()["id"])
            assert set(printed) <= ids  # every reported save is there
            assert len(ids) - before <= len(printed) + 1  # at most the one save in flight beyond them
            assert s.record(s.items()["hash"][0], "after", {"rating": 3}) > max(printed)  # and the store takes new saves


def test_resume_from_a_new_object(tmp_path):
    "Label 6 of 10 items, reopen: the queue starts at the 7th."
    path = tmp_path / "resume.sqlite"
    with LabelStore(path) as s:
        hashes = s.add_items(pd.DataFrame({"input": [f"q{i}" for i in range(10)], "output": [f"a{i}" for i in range(10)]}))
        for h in hashes[:6]: s.record(h, "ann", {"rating": 2}, seconds=1.5)
    with LabelStore(path) as s:
        assert s.queue("ann") == hashes[6:]
        assert s.progress("ann") == {"labeled": 6, "skipped": 0, "remaining": 4, "total": 10}
        s.record(hashes[5], "ann", None, kind="retract")  # undo the 6th: it comes back
        assert s.queue("ann") == hashes[5:]


def test_retract_undoes_like_a_stack(tmp_path):
    with LabelStore(tmp_path / "undo.sqlite") as s:
        [h] = s.add_items([("q", "a")])
        s.record(h, "ann", {"rating": 1}); s.record(h, "ann", {"rating": 2}); s.record(h, "ann", None, kind="skip")
        assert s.labels()["value"].tolist() == []  # the later skip supersedes her label
        s.record(h, "ann", None, kind="retract")
        assert s.labels()["value"].tolist() == [{"rating": 2}]
        s.record(h, "ann", None, kind="retract")
        assert s.labels()["value"].tolist() == [{"rating": 1}]
        s.record(h, "ann", None, kind="retract")
        assert len(s.labels()) == 0 and s.queue("ann") == [h]
        with pytest.raises(ValueError, match="nothing to retract"): s.record(h, "ann", None, kind="retract")
        assert s.events()["kind"].tolist() == ["label", "label", "skip", "retract", "retract", "retract"]


def test_k_and_gold(tmp_path):
    with LabelStore(tmp_path / "kg.sqlite") as s:
        data = [(f"q{i}", f"a{i}") for i in range(100)]
        gold_at = list(range(5, 100, 10))  # 10 gold items
        hashes = s.add_items(data, gold={i: {"rating": 1} for i in gold_at})
        gold, normal = {hashes[i] for i in gold_at}, [h for i, h in enumerate(hashes) if i not in gold_at]
        assert s.queue("ann") == normal  # gold_rate=0: no gold at all
        qa = s.queue("ann", gold_rate=0.1)
        assert [h for h in qa if h not in gold] == normal and sum(h in gold for h in qa) == 10  # 90 normal -> 10 gold
        assert s.queue("ann", gold_rate=0.05).count(hashes[5]) <= 1 and sum(h in gold for h in s.queue("ann", gold_rate=0.05)) == 5
        assert qa == s.queue("ann", gold_rate=0.1, seed=0) and qa != s.queue("bob", gold_rate=0.1) and qa != s.queue("ann", gold_rate=0.1, seed=1)
        for h in qa[:30]: s.record(h, "ann", {"rating": 4})
        assert s.queue("ann", gold_rate=0.1) == qa[30:]  # the rest keeps its order as she labels
        # k=2: ann and bob label the first 30 normal items; carol's queue skips them, but gold is everyone's
        for h in normal[:30]: s.record(h, "bob", {"rating": 4})
        for h in normal[:30]: s.record(h, "ann", {"rating": 4}) if h not in qa[:30] else None
        qc = s.queue("carol", k=2, gold_rate=0.1)
        assert [h for h in qc if h not in gold] == normal[30:]
        assert gold <= set(s.queue("carol", k=1, gold_rate=0.5))  # gold ignores k
        s.record(normal[30], "carol", None, kind="skip")
        assert normal[30] not in s.queue("carol", k=2) and normal[30] in s.queue("dave", k=2)  # a skip is no label
        assert s.progress("carol") == {"labeled": 0, "skipped": 1, "remaining": 99, "total": 100}


def test_gold_set_later_and_item_gold(tmp_path):
    with LabelStore(tmp_path / "g.sqlite") as s:
        hashes = s.add_items([("q0", "a0"), ("q1", "a1")])
        assert s.items()["gold"].tolist() == [None, None]
        item = Item(hashes[1], "q1", "a1", gold={"rating": 3})
        assert s.add_items([item], gold={0: {"rating": 4}}) == [hashes[1]]  # already stored: gold set, position kept
        assert s.item(hashes[1]).gold == {"rating": 4} and s.items()["position"].tolist() == [0, 1]  # the map wins over Item.gold
        s.add_items([Item(hashes[0], "q0", "a0", gold={"rating": 1})])
        assert s.item(hashes[0]).gold == {"rating": 1} and s.queue("ann") == []


def test_two_objects_and_exports(tmp_path):
    path = tmp_path / "two.sqlite"
    one, two = LabelStore(path), LabelStore(path)
    try:
        hashes = one.add_items([([{"role": "user", "content": "hi, \"you\""}], "hello,\nthere"), ("q2", "a2")])
        two.record(hashes[0], "bob", {"labels": ["a", "b"], "note": "multi, line\nnote"}, seconds=1.0)
        one.record(hashes[0], "ann", {"labels": ["b"]}, kind="judge")
        assert one.labels()["labeler"].tolist() == ["bob"] and two.labels(("label", "judge"))["labeler"].tolist() == ["ann", "bob"]
        frame = one.to_frame()
        back = pd.read_json(one.export(tmp_path / "x.jsonl"), lines=True, dtype=False)
        assert back.to_dict("records")[0]["input"] == [{"role": "user", "content": 'hi, "you"'}]
        assert back["labels"].tolist() == frame["labels"].tolist() == [["b"], ["a", "b"]]
        csv = pd.read_csv(one.export(tmp_path / "x.csv"), dtype={"item": str})
        assert csv["output"].tolist() == ["hello,\nthere"] * 2 and csv["labels"].tolist() == ['["b"]', '["a", "b"]']
    finally:
        one.close(); two.close()
    with LabelStore(tmp_path / "empty.sqlite") as e:
        assert list(e.labels().columns) == ["item", "labeler", "kind", "value", "seconds", "at"] and e.queue("x") == []
        assert list(e.events().columns) == ["id", "item", "labeler", "kind", "value", "seconds", "at", "schema"]


def test_errors_name_the_file_and_the_fix(tmp_path):
    (tmp_path / "notes.txt").write_text("just notes\n" * 500)
    with pytest.raises(ValueError, match=r"notes.txt is not a label store \(not an SQLite database"): LabelStore(tmp_path / "notes.txt")
    con = sqlite3.connect(tmp_path / "app.db"); con.execute("CREATE TABLE users (id)"); con.commit(); con.close()
    with pytest.raises(ValueError, match=r"app.db is not a label store \(an SQLite database with the tables \['users'\]\)"): LabelStore(tmp_path / "app.db")
    assert sqlite3.connect(tmp_path / "app.db").execute("PRAGMA journal_mode").fetchone()[0] == "delete"  # left untouched
    path = tmp_path / "s.sqlite"
    with LabelStore(path) as s:
        [h] = s.add_items([("q", "a")])
        with pytest.raises(ValueError, match="is not in the label store .*s.sqlite: add it first"): s.record("feedfacefeedface", "ann", {"r": 1})
        with pytest.raises(KeyError, match="no item 'nope' in the label store"): s.item("nope")
        with pytest.raises(ValueError, match="kind='like': use one of"): s.record(h, "ann", {"r": 1}, kind="like")
        with pytest.raises(ValueError, match="a label needs its value as a dict"): s.record(h, "ann", 3)
        with pytest.raises(ValueError, match="not JSON-serialisable"): s.record(h, "ann", {"r": float("nan")})
        with pytest.raises(ValueError, match="labeler=None"): s.record(h, None, {"r": 1})
        with pytest.raises(ValueError, match="gold key 3 is neither a hash nor a position"): s.add_items([("q", "a")], gold={3: {"r": 1}})
        with pytest.raises(ValueError, match="k=0"): s.queue("ann", k=0)
        with pytest.raises(ValueError, match="gold_rate=1.5"): s.queue("ann", gold_rate=1.5)
        with pytest.raises(ValueError, match=r"kinds \['lable'\] unknown"): s.labels(kinds=("lable",))
        with pytest.raises(ValueError, match="suffix must be .csv or .jsonl"): s.export(tmp_path / "x.parquet")
        assert len(s.events()) == 0  # no failed call wrote anything
    con = sqlite3.connect(path); con.execute("PRAGMA user_version = 9"); con.close()
    with pytest.raises(ValueError, match="format version 9; this research_kit reads version 1: upgrade research_kit"): LabelStore(path)
    with pytest.raises(ValueError, match="no column 'input'; its columns are \\['prompt', 'completion'\\]"):
        to_items(pd.DataFrame({"prompt": ["q"], "completion": ["a"]}))
    assert to_items(pd.DataFrame({"prompt": ["q"], "completion": ["a"]}), input="prompt", output="completion") == [Item(item_hash("q", "a"), "q", "a")]
