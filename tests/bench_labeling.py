"""Benchmark: the label store with 10,000 items and ~30,000 events from 3 labelers.

Run: .venv/bin/python tests/bench_labeling.py [--items 10000] [--saves 300]

Measures, for synchronous=FULL and NORMAL side by side: a save (`record`), a labeler's queue, `progress`,
`labels()`, a naive "save, then ask for the queue again" cycle, and the Labeler widget's own cycle (a digit key,
then Enter: validate, save, show the next item; with and without k), each against the issue's target of 20 ms. Prints a table; nothing is written outside a temporary folder."""
import argparse
import random
import statistics
import tempfile
import time
from pathlib import Path

from research_kit.labeling.schema import likert
from research_kit.labeling.store import LabelStore
from research_kit.labeling.widget import Labeler

SCHEMA = likert("rating", rationale=False)

TARGET_MS = 20.0
LABELERS = ("alice", "bob", "carol")


def build(path: Path, n_items: int, seed: int = 0) -> list[str]:
    "A store with n_items items (2% gold) and ~3 events per item: labels, some skips, relabels and retracts."
    rng = random.Random(f"{seed}:bench:build")
    with LabelStore(path, synchronous="NORMAL") as store:
        hashes = store.add_items([(f"prompt {i}: " + "words " * 40, f"answer {i}: " + "text " * 80) for i in range(n_items)],
                                 gold={i: {"rating": 1} for i in range(0, n_items, 50)})
        for who in LABELERS:
            for h in hashes[: int(n_items * 0.95)]:
                r = rng.random()
                if r < 0.03: store.record(h, who, None, kind="skip")
                else: store.record(h, who, {"rating": rng.randint(1, 5), "rationale": "because"}, seconds=rng.uniform(1, 9))
                if r > 0.985:  # a relabel, and sometimes its undo
                    store.record(h, who, {"rating": 3}, seconds=1.0)
                    if r > 0.995: store.record(h, who, None, kind="retract")
    return hashes


def timed(fn, reps: int) -> list[float]:
    "Milliseconds per call of fn(i) for i in range(reps)."
    out = []
    for i in range(reps):
        t = time.perf_counter(); fn(i); out.append((time.perf_counter() - t) * 1000)
    return out


def summary(ms: list[float]) -> tuple[float, float, float]:
    ms = sorted(ms)
    return statistics.median(ms), ms[min(len(ms) - 1, round(0.99 * (len(ms) - 1)))], ms[-1]


def measure(path: Path, hashes: list[str], synchronous: str, saves: int) -> dict[str, tuple]:
    "name -> (p50, p99, max) ms for each operation, on the store at path."
    rng = random.Random(f"0:bench:{synchronous}")
    res = {}
    with LabelStore(path, synchronous=synchronous) as store:
        who = f"dave-{synchronous}"  # a labeler with nothing done yet: the longest queue
        res["record (a save)"] = summary(timed(lambda i: store.record(rng.choice(hashes), who, {"rating": 4}, seconds=2.0), saves))
        res["queue(alice): ~500 left"] = summary(timed(lambda i: store.queue("alice"), 50))
        res["queue(new, k=2, gold 10%)"] = summary(timed(lambda i: store.queue("erin", k=2, gold_rate=0.1), 50))
        res["progress(alice)"] = summary(timed(lambda i: store.progress("alice"), 100))
        res["labels() (all ~30k)"] = summary(timed(lambda i: store.labels(), 5))

        shown = [store.queue(who)[0]]
        def cycle(i):  # the naive cycle: save the item shown, then ask for the whole queue again and load its head
            store.record(shown[0], who, {"rating": 2}, seconds=3.0)
            shown[0] = store.queue(who)[0]
            store.item(shown[0])
        res["naive: record + queue()[0]"] = summary(timed(cycle, 100))
        for k in (None, 2):  # the widget's cycle: a digit, then Enter (validate, save, show the next item)
            lab = Labeler(None, SCHEMA, store, f"frank-{synchronous}-{k}", k=k)
            res[f"Labeler: key + Enter, k={k}"] = summary(timed(lambda i: (lab.press("4"), lab.press("Enter")), 100))
        n_events = store._read("SELECT COUNT(*) FROM events")[0][0]
    res["_events"] = n_events
    return res


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--items", type=int, default=10_000)
    ap.add_argument("--saves", type=int, default=300)
    args = ap.parse_args()
    with tempfile.TemporaryDirectory() as d:
        path = Path(d) / "bench.sqlite"
        t = time.perf_counter(); hashes = build(path, args.items)
        built = time.perf_counter() - t
        with LabelStore(path) as s: n_events = s._read("SELECT COUNT(*) FROM events")[0][0]
        print(f"store: {args.items:,} items, {n_events:,} events from {len(LABELERS)} labelers "
              f"(built with record() in {built:.1f} s, {built / n_events * 1000:.2f} ms per save at NORMAL)")
        full, normal = measure(path, hashes, "FULL", args.saves), measure(path, hashes, "NORMAL", args.saves)
        print(f"after the runs: {normal['_events']:,} events, file {path.stat().st_size / 1e6:.1f} MB")
    print()
    print(f"{'operation':30} {'FULL p50':>9} {'p99':>7} {'max':>7} | {'NORMAL p50':>10} {'p99':>7} {'max':>7} | target    FULL p99")
    for name in [k for k in full if not k.startswith("_")]:
        f, n = full[name], normal[name]
        ok = "ok" if f[1] < TARGET_MS else "OVER"
        print(f"{name:30} {f[0]:9.2f} {f[1]:7.2f} {f[2]:7.2f} | {n[0]:10.2f} {n[1]:7.2f} {n[2]:7.2f} | < {TARGET_MS:.0f} ms   {ok}")
    print("\n(ms; record: over", args.saves, "saves; labels() reads every label in force, it is not on the save path)")


if __name__ == "__main__":
    main()
