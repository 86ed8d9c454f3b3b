"""The labeling widget driven from Python the way a browser drives it: button clicks (`Button.click()`) and keys
as the custom widget messages KeyCapture receives from the page. Also the key strip's ES module run under node
with a minimal DOM stand-in (the keys it claims, the ones it lets through, focus on render and after a click)."""
import subprocess
import time

import pytest

from research_kit.labeling.schema import Categories, Scale, Schema, Text, likert
from research_kit.labeling.store import LabelStore
from research_kit.labeling.widget import KeyCapture, Labeler, render_item

ITEMS = [{"input": f"Question {i}", "output": f"Answer {i}"} for i in range(1, 13)]
SCHEMA = likert("harm", anchors={1: "harmless", 5: "harmful"}, instructions="How harmful is the answer?")


def key(lab, k):
    "A key as the page sends it: a custom message to the KeyCapture widget."
    lab.key_capture._handle_custom_msg({"event": "key", "key": k}, [])


def keys(lab, *ks):
    for k in ks: key(lab, k)


@pytest.fixture
def db(tmp_path): return tmp_path / "labels.db"


def labels_of(db, who):
    with LabelStore(db) as s:
        df = s.labels()
        return df.loc[df["labeler"] == who, ["item", "value"]].values.tolist()


def test_keys_and_buttons_label_and_persist(db):
    lab = Labeler(ITEMS, SCHEMA, db, "alice")
    hashes = lab.store.queue("alice")
    for r in "31524": keys(lab, r, "Enter")  # five by keys
    lab.option_buttons["harm"][1].click()  # one by buttons
    assert lab.pending == {"harm": 2}
    lab.save_button.click()
    assert labels_of(db, "alice") == [[h, {"harm": v}] for h, v in zip(hashes, [3, 1, 5, 2, 4, 2])]
    assert lab.position == 6 and lab.current.hash == hashes[6]
    assert lab.progress_text.value == "6 of 12 labeled"
    assert 'data-position="7"' in lab.item_view.value and "item 7 of 12" in lab.item_view.value
    assert lab.progress_bar.value == 6 and lab.progress_bar.max == 12


def test_enter_with_a_required_field_missing_saves_nothing(db):
    schema = Schema([Scale("harm"), Categories("topic", ["math", "other"]), Text("why", required=True)])
    lab = Labeler(ITEMS[:3], schema, db, "alice")
    keys(lab, "4", "Enter")
    assert "'topic' is required" in lab.status.value and "#cf222e" in lab.status.value
    assert lab.position == 0 and lab.store.events().empty
    keys(lab, "2")  # the digits fill the fields in order: harm, then topic
    assert lab.pending == {"harm": 4, "topic": "other"}
    key(lab, "Enter")
    assert "'why' is required" in lab.status.value and lab.store.events().empty
    lab.text_boxes["why"].value = "looks fine"
    key(lab, "Enter")
    assert labels_of(db, "alice")[0][1] == {"harm": 4, "topic": "other", "why": "looks fine"}
    assert lab.position == 1 and lab.status.value == "" and lab.text_boxes["why"].value == ""


def test_backspace_undoes_the_last_save(db):
    lab = Labeler(ITEMS, SCHEMA, db, "alice")
    keys(lab, "2", "Enter", "5", "Enter")
    assert lab.position == 2
    key(lab, "Backspace")
    assert lab.position == 1 and lab.pending == {"harm": 5} and "took back" in lab.status.value
    assert lab.store.events("alice")["kind"].tolist() == ["label", "label", "retract"]
    assert [v for _, v in labels_of(db, "alice")] == [{"harm": 2}]
    assert lab.progress_text.value == "1 of 12 labeled"
    keys(lab, "Backspace", "Backspace")  # the first save, then nothing left to undo
    assert lab.position == 0 and labels_of(db, "alice") == [] and "nothing to undo" in lab.status.value


def test_undo_of_a_relabel_restores_the_label_before_it(db):
    lab = Labeler(ITEMS, SCHEMA, db, "alice")
    keys(lab, "2", "Enter", "ArrowLeft")
    assert lab.position == 0 and lab.pending == {"harm": 2}  # an item labeled here shows its label
    keys(lab, "4", "Enter", "Backspace")
    assert labels_of(db, "alice") == [[lab.current.hash, {"harm": 2}]]
    assert lab.position == 0 and lab.pending == {"harm": 4} and lab.progress_text.value == "1 of 12 labeled"


def test_s_skips_and_arrows_move_without_saving(db):
    lab = Labeler(ITEMS, SCHEMA, db, "alice")
    key(lab, "s")
    assert lab.position == 1 and lab.store.events("alice")["kind"].tolist() == ["skip"]
    assert lab.progress_text.value == "0 of 12 labeled · 1 skipped"
    keys(lab, "3", "ArrowRight", "ArrowRight")
    assert lab.position == 3 and lab.pending == {} and len(lab.store.events()) == 1
    keys(lab, "ArrowLeft")
    assert lab.position == 2
    lab.prev_button.click(); lab.prev_button.click(); lab.prev_button.click()
    assert lab.position == 0 and "first item" in lab.status.value
    lab.next_button.click()
    assert lab.position == 1
    assert lab.press("x") is False and lab.press("Enter") is True


def test_a_new_labeler_resumes_at_the_first_open_item(db):
    lab = Labeler(ITEMS, SCHEMA, db, "alice")
    for r in "123451": keys(lab, r, "Enter")
    lab.store.close()
    again = Labeler(ITEMS, SCHEMA, str(db), "alice")  # the same data added again: nothing duplicated
    assert again.position == 6 and "item 7 of 12" in again.item_view.value
    assert again.progress_text.value == "6 of 12 labeled" and len(again.store.items()) == 12
    keys(again, "2", "Enter")
    assert again.position == 7


def test_the_end_of_the_queue(db):
    lab = Labeler(ITEMS[:2], SCHEMA, db, "alice")
    keys(lab, "1", "ArrowRight", "2", "Enter")  # the second item first; the first is still open
    assert lab.position == 0
    keys(lab, "3", "Enter")
    assert lab.done and lab.current is None and lab.position is None
    assert "All done" in lab.item_view.value and lab.save_button.disabled and all(b.disabled for b in lab.option_buttons["harm"])
    keys(lab, "Enter", "4")
    assert "nothing to save" in lab.status.value and len(lab.store.events()) == 2
    key(lab, "ArrowLeft")
    assert lab.position == 1 and lab.pending == {"harm": 2}


def test_two_labelers_are_blind_to_each_other(db):
    alice = Labeler(ITEMS, Schema([Scale("harm"), Text("why")]), db, "alice")
    alice.text_boxes["why"].value = "ALICE-SECRET"
    keys(alice, "5", "Enter")
    bob = Labeler(ITEMS, Schema([Scale("harm"), Text("why")]), db, "bob")
    assert bob.position == 0 and bob.pending == {} and bob.text_boxes["why"].value == ""
    assert "ALICE-SECRET" not in bob.item_view.value and "alice" not in bob.item_view.value
    assert [b.button_style for b in bob.option_buttons["harm"]] == [""] * 5
    assert bob.progress_text.value == "0 of 12 labeled"
    keys(bob, "1", "Enter")
    assert [v for _, v in labels_of(db, "bob")] == [{"harm": 1}]
    assert [v for _, v in labels_of(db, "alice")] == [{"harm": 5, "why": "ALICE-SECRET"}]


def test_k_labelers_per_item(db):
    alice = Labeler(ITEMS[:4], SCHEMA, db, "alice", k=1)
    bob = Labeler(ITEMS[:4], SCHEMA, db, "bob", k=1)
    keys(alice, "1", "Enter", "2", "Enter")  # alice labels items 0 and 1 while bob looks at item 0
    keys(bob, "3", "Enter")  # bob's save asks the queue again: item 1 has its one label, so bob goes on to item 2
    assert bob.position == 2
    assert Labeler(None, SCHEMA, db, "carol", k=1).position == 2
    assert Labeler(None, SCHEMA, db, "carol", k=2).position == 1  # item 0 has two labels, item 1 one


def test_gold_items_are_interleaved_and_not_revealed(db):
    with LabelStore(db) as s: s.add_items(ITEMS, gold={0: {"harm": 5}, 1: {"harm": 1}})
    lab = Labeler(None, SCHEMA, db, "alice", gold_rate=0.2, seed=1)
    seen = []
    while not lab.done:
        seen.append(lab.current.hash)
        assert "gold" not in lab.item_view.value and lab.pending == {}
        keys(lab, "3", "Enter")
    with LabelStore(db) as s: gold = set(s.items().query("gold.notna()")["hash"])
    assert gold & set(seen) and len(seen) == 12


def test_seconds_are_recorded(db, monkeypatch):
    clock = [1000.0]
    monkeypatch.setattr(time, "monotonic", lambda: clock[0])
    lab = Labeler(ITEMS, SCHEMA, db, "alice")
    clock[0] += 7.25
    keys(lab, "3", "Enter")
    clock[0] += 2.5
    key(lab, "s")
    assert lab.store.events("alice")["seconds"].tolist() == [7.25, 2.5]
    assert lab.store.events("alice")["schema"].tolist() == [SCHEMA.id] * 2


def test_html_in_items_is_escaped(db):
    evil = "</td><script>alert(1)</script>"
    items = [{"input": [{"role": "user", "content": "<b>hi</b>"}, {"role": "assistant", "content": evil}], "output": evil}]
    lab = Labeler(items, likert(instructions="<i>rate</i>"), db, "alice")
    for html in (lab.item_view.value, render_item(lab.current), lab.instructions.value):
        assert "<script>" not in html and "<b>hi" not in html and "<i>rate" not in html
    assert "&lt;/td&gt;&lt;script&gt;alert(1)&lt;/script&gt;" in lab.item_view.value
    assert "rk-role-user" in lab.item_view.value and "rk-role-assistant" in lab.item_view.value


def test_css_classes_for_a_browser(db):
    lab = Labeler(ITEMS, Schema([Scale("harm"), Categories("topic", ["a", "b"]), Text("why")]), db, "alice")
    cls = lambda w: set(w._dom_classes)
    assert "rk-labeler" in cls(lab) and "rk-keys" in cls(lab.key_capture)
    assert all({"rk-option", f"rk-key-{n}"} <= cls(b) for bs in lab.option_buttons.values() for n, b in enumerate(bs, 1))
    for name in ("save", "skip", "undo", "prev", "next"): assert f"rk-{name}" in cls(getattr(lab, f"{name}_button"))
    assert "rk-progress-text" in cls(lab.progress_text) and "rk-item" in cls(lab.item_view) and "rk-status" in cls(lab.status)
    assert "rk-text" in cls(lab.text_boxes["why"])


def test_errors_name_the_fix(db):
    with pytest.raises(ValueError, match="labeler must be a name"): Labeler(ITEMS, SCHEMA, db, " ")
    with pytest.raises(TypeError, match="store must be a LabelStore or the path"): Labeler(ITEMS, SCHEMA, 42, "alice")


def test_ten_thousand_items_stay_responsive(tmp_path):
    store = LabelStore(tmp_path / "big.db")
    store.add_items([(f"question {i}", f"answer {i}") for i in range(10_000)])
    t0 = time.perf_counter()
    lab = Labeler(None, SCHEMA, store, "dana")
    opened = time.perf_counter() - t0
    t0 = time.perf_counter()
    for _ in range(20): keys(lab, "4", "Enter")
    step = (time.perf_counter() - t0) / 20
    print(f"10,000 items: open {opened * 1000:.0f} ms, choose + save + next item {step * 1000:.1f} ms")
    assert lab.position == 20 and lab.progress_text.value == "20 of 10000 labeled"


def test_adjudicator_shows_every_label_and_records_the_decision(db):
    from research_kit.labeling.widget import Adjudicator
    for who, ratings in (("alice", "1234"), ("bob", "1244"), ("carol", "5234")):
        lab = Labeler(ITEMS[:4], SCHEMA, db, who)
        for r in ratings: keys(lab, r, "Enter")
    adj = Adjudicator(db, SCHEMA)
    assert adj.progress_text.value == "0 of 2 labeled"
    first = adj.current.hash
    assert all(f"<td>{who}</td>" in adj.item_view.value for who in ("alice", "bob", "carol"))
    keys(adj, "1", "Enter")
    with LabelStore(db) as s:
        df = s.labels(kinds=("adjudication",))
        assert df[["item", "labeler", "value"]].values.tolist() == [[first, "adjudicator", {"harm": 1}]]
    again = Adjudicator(db, SCHEMA)
    assert again.current.hash != first and again.progress_text.value == "1 of 2 labeled"


def test_key_capture_message_path():
    got = []
    kc = KeyCapture(on_key=got.append)
    kc._handle_custom_msg({"event": "key", "key": "Enter"}, [])
    kc._handle_custom_msg({"event": "something else"}, [])
    kc._handle_custom_msg("not a dict", [])
    assert got == ["Enter"]


FAKE_DOM = r"""
class El {
  constructor(tag, cls = "") { this.tagName = tag.toUpperCase(); this.className = cls; this.parent = null; this.listeners = {}; this.focused = 0; this.children = []; }
  appendChild(c) { c.parent = this; this.children.push(c); return c; }
  closest(sel) { for (let e = this; e; e = e.parent) if (sel === "button" ? e.tagName === "BUTTON" : e.className.split(" ").includes(sel.slice(1))) return e; return null; }
  addEventListener(t, f) { (this.listeners[t] ||= []).push(f); }
  removeEventListener(t, f) { this.listeners[t] = (this.listeners[t] || []).filter(g => g !== f); }
  focus() { this.focused++; }
  dispatch(t, ev) { for (let e = ev.target; e; e = e.parent) { for (const f of e.listeners[t] || []) f(ev); if (ev.stopped) break; } }
}
globalThis.document = { createElement: (t) => new El(t) };
const { default: widget } = await import(process.argv[2]);
const sent = [], model = { get: () => "hint", send: (m) => sent.push(m) };
const box = new El("div", "widget-vbox rk-labeler"), btn = box.appendChild(new El("button")), ta = box.appendChild(new El("textarea"));
const el = new El("div");
const cleanup = widget.render({ model, el });
box.appendChild(el);  // the view joins the page after render
await new Promise(r => setTimeout(r, 150));
const strip = el.children[0], out = {};
const press = (target, key, mods = {}) => { const ev = { target, key, ...mods, prevented: false, stopped: false,
  preventDefault() { this.prevented = true; }, stopPropagation() { this.stopped = true; } }; target.dispatch("keydown", ev); return ev.prevented && ev.stopped; };
out.focused_on_render = strip.focused;
out.claimed = ["1", "9", "Enter", "Backspace", "s", "ArrowLeft", "ArrowRight"].map(k => press(strip, k));
out.from_button = press(btn, "3");
out.passed = [press(strip, "0"), press(strip, "x"), press(strip, "Enter", { shiftKey: true }), press(strip, "s", { ctrlKey: true }), press(ta, "s"), press(ta, "1")];
const before = strip.focused; btn.dispatch("click", { target: btn }); await new Promise(r => setTimeout(r, 20));
out.refocused_after_click = strip.focused - before;
out.sent = sent.map(m => m.event + ":" + m.key);
cleanup(); out.after_cleanup = press(strip, "1");
console.log(JSON.stringify(out));
"""


def test_key_capture_esm_in_node(tmp_path):
    import json
    (tmp_path / "kc.mjs").write_text(KeyCapture._esm)
    (tmp_path / "run.mjs").write_text(FAKE_DOM)
    out = subprocess.run(["node", str(tmp_path / "run.mjs"), str(tmp_path / "kc.mjs")], capture_output=True, text=True, timeout=30)
    assert out.returncode == 0, out.stderr
    r = json.loads(out.stdout)
    assert r["focused_on_render"] == 1 and r["refocused_after_click"] == 1
    assert r["claimed"] == [True] * 7 and r["from_button"] is True
    assert r["passed"] == [False] * 6 and r["after_cleanup"] is False
    assert r["sent"] == ["key:1", "key:9", "key:Enter", "key:Backspace", "key:s", "key:ArrowLeft", "key:ArrowRight", "key:3"]
