"""Simulation components against the scripted server: the worker and the experts answer through a real
OpenAI-compatible server on 127.0.0.1; scores parsed from prose, unparseable ones None and counted; the perturbation's
common random numbers; the User seeded per step; the hh-rlhf loader; the teacher's corrective example in memory and
in the worker's next prompt; the memory cap."""
import gzip
import json

import pytest

from research_kit.basics import run_sync
from research_kit.client import InferenceAPI
from research_kit.simulation.components import (REFUSAL, Expert, InContextTeacher, NoTeacher, Overseer, Perturbation, User,
                                                Worker, load_hh_rlhf, load_queries, parse_score)
from research_kit.testing import ScriptedServer

MODEL = "openai/scripted"


def _script(body: dict) -> str:
    "Worker: refuses 'poison', complies with 'hurt', else helps. Experts: prose ratings keyed by what the answer says. Teacher: critique, revision."
    msgs = body["messages"]
    system, last = (msgs[0]["content"] if msgs[0]["role"] == "system" else ""), msgs[-1]["content"]
    if last.startswith("CritiqueRequest:"): return "Critique: it explains how to hurt an animal."
    if last.startswith("RevisionRequest:"): return "Revision: I won't help hurt an animal; a vet can advise on pet safety."
    if system.startswith("Rate an AI"):
        answer = last.split("\nAnswer: ", 1)[1]
        if "mumble" in answer: return "Hard to say, somewhere between 6 and 7."
        if "Here is how" in answer: return "I'd give it a 2 out of 10 because it helps cause harm."
        return "I'd give it a 7 out of 10 because it answers the question."
    if "poison" in last.lower(): return "I won't help with that."
    return f"Here is how: {last}" if "hurt" in last.lower() else f"Happy to help: {last}"


@pytest.fixture(scope="module")
def env(tmp_path_factory):
    with ScriptedServer(reply=_script) as srv, InferenceAPI(cache_dir=tmp_path_factory.mktemp("cache")) as api:
        yield srv, api, {"api_base": srv.url, "api_key": "sk-test"}


def test_worker_and_experts_answer_through_the_server(env):
    srv, api, params = env
    srv.reset_counts()
    w = Worker(MODEL, params=params)
    answer = run_sync(w.arespond(api, "How do I bake bread?")).completion
    assert answer == "Happy to help: How do I bake bread?"
    assert run_sync(w.arespond(api, "How do I poison a dog?")).completion == "I won't help with that."
    body = srv.bodies[-1]
    assert body["model"] == "scripted" and body["messages"][0]["content"] == w.system_prompt
    ratings = {a: run_sync(Expert(a, MODEL, params=params).arate(api, "How do I bake bread?", answer)) for a in ("helpfulness", "harmlessness")}
    assert {a: r.score for a, r in ratings.items()} == {"helpfulness": 7, "harmlessness": 7}     # parsed from prose
    assert ratings["helpfulness"].text == "I'd give it a 7 out of 10 because it answers the question."
    assert ratings["helpfulness"].response.prompt_tokens > 0
    bodies = list(srv.bodies)[-2:]
    assert [b["stop"] for b in bodies] == [["\n"], ["\n"]] and bodies[0]["temperature"] == 0
    systems = [b["messages"][0]["content"] for b in bodies]
    assert systems[0] != systems[1] and "How helpful" in systems[0] and "How harmless" in systems[1]   # each its own question
    assert srv.requests == 4


def test_unparseable_ratings_are_none_and_counted(env):
    srv, api, params = env
    hx = Expert("harmlessness", MODEL, params=params)
    answers = ["Bread needs flour.", "Here is how: step one.", "mumble", "mumble mumble"]
    ratings = [run_sync(hx.arate(api, "q", a)) for a in answers]
    assert [r.score for r in ratings] == [7, 2, None, None]
    assert sum(r.score is None for r in ratings) == 2
    assert Overseer().failing({"harmlessness": ratings[2].score, "helpfulness": 7}) == []     # None never fails
    assert Overseer().failing({"harmlessness": ratings[1].score}) == ["harmlessness"]


@pytest.mark.parametrize("text,want", [("I'd give it a 7 out of 10 because...", 7), ("Rating: 8/10", 8), ("8.5/10", 8.5),
                                       ("Score: 3.", 3), ("**9**/10", 9), ("seven out of ten", 7), ("10/10", 10), ("0/10", 0),
                                       ("6. The answer is fine", 6), ("between 6 and 7", None), ("Rating: 3/10, no, 5/10", None),
                                       ("12/10", None), ("-1", None), ("no rating here", None), ("4/5", None)])
def test_parse_score(text, want):
    assert parse_score(text) == want


def test_parse_score_other_scale():
    assert parse_score("4/5", scale=5) == 4 and parse_score("Rating: 8/10", scale=5) is None


def test_perturbation_common_random_numbers():
    steps = {r: {s for s in range(1000) if Perturbation(r, seed=3).apply("q", s)[1]} for r in (0.3, 0.6)}
    assert steps[0.3] < steps[0.6]
    assert 250 < len(steps[0.3]) < 350 and 550 < len(steps[0.6]) < 650
    assert all(Perturbation(0.3, seed=3).apply("q", s) == Perturbation(0.6, seed=3).apply("q", s) for s in steps[0.3])
    assert steps[0.3] != {s for s in range(1000) if Perturbation(0.3, seed=4).apply("q", s)[1]}


def test_user_is_deterministic_per_seed_and_step():
    qs = load_queries()
    a = User(qs, seed=5, perturbation=Perturbation(0.4))
    forward = [run_sync(a.aquery(None, s)) for s in range(30)]
    backward = [run_sync(User(qs, seed=5, perturbation=Perturbation(0.4)).aquery(None, s)) for s in reversed(range(30))][::-1]
    assert forward == backward
    assert [q.original for q in forward] != [run_sync(User(qs, seed=6).aquery(None, s)).original for s in range(30)]
    assert {q.category for q in forward} <= {"benign", "borderline", "harmful"}


def test_hh_rlhf_loader(tmp_path):
    recs = [{"chosen": "\n\nHuman: What is a good cake?\n\nAssistant: Chocolate.", "rejected": "\n\nHuman: What is a good cake?\n\nAssistant: None."},
            {"chosen": "\n\nHuman: How do I fix a bike?\n\nAssistant: Which part?\n\nHuman: The chain.\n\nAssistant: ...", "rejected": ""}]
    path = tmp_path / "train.jsonl"
    path.write_text("".join(json.dumps(r) + "\n" for r in recs))
    df = load_hh_rlhf(path)
    assert df.to_dict("records") == [{"id": "hh000001", "query": "What is a good cake?", "category": "unknown"},
                                     {"id": "hh000002", "query": "How do I fix a bike?", "category": "unknown"}]
    assert len(load_hh_rlhf(path, limit=1)) == 1
    with gzip.open(tmp_path / "train.jsonl.gz", "wt") as f: f.write(path.read_text())
    assert load_hh_rlhf(tmp_path / "train.jsonl.gz").equals(df)
    bad = tmp_path / "bad.jsonl"
    bad.write_text(json.dumps(recs[0]) + "\n\n" + '{"chosen": "Human: cut off' + "\n")
    with pytest.raises(ValueError, match=r"bad\.jsonl, line 3: not an hh-rlhf record"): load_hh_rlhf(bad)
    bad.write_text(json.dumps({"rejected": "x"}) + "\n")
    with pytest.raises(ValueError, match=r"bad\.jsonl, line 1: .*\"chosen\""): load_hh_rlhf(bad)


def test_teacher_corrects_in_context(env):
    srv, api, params = env
    w = Worker(MODEL, params=params)
    harmful = run_sync(w.arespond(api, "How do I hurt a cat?")).completion
    assert harmful.startswith("Here is how")
    srv.reset_counts()
    ev = run_sync(InContextTeacher().aretrain(api, w, 3, "harmlessness", "How do I hurt a cat?", harmful))
    assert srv.requests == 2 and ev.calls == 2 and ev.method == "revision"
    assert ev.after == "I won't help hurt an animal; a vet can advise on pet safety." and ev.before == harmful
    assert ev.prompt_tokens > 0 and ev.completion_tokens > 0 and ev.cost_usd >= 0
    assert [b["messages"][-1]["content"].split(":")[0] for b in srv.bodies] == ["CritiqueRequest", "RevisionRequest"]
    assert w.memory == [("How do I hurt a cat?", ev.after)]
    run_sync(w.arespond(api, "How do I bake bread?"))
    sent = [m["content"] for m in srv.bodies[-1]["messages"]]
    assert sent[1:] == ["How do I hurt a cat?", ev.after, "How do I bake bread?"]   # the corrective example, then the query
    ev = run_sync(InContextTeacher(method="refusal").aretrain(api, w, 4, "harmlessness", "How do I hurt a dog?", "Here is how."))
    assert (ev.after, ev.calls, srv.requests) == (REFUSAL, 0, 3)
    assert run_sync(NoTeacher().aretrain(api, w, 5, "harmlessness", "q", "a")) is None and len(w.memory) == 2


def test_memory_size_cap():
    w = Worker(MODEL, memory_size=3)
    for i in range(10): w.remember(f"q{i}", f"a{i}")
    assert w.memory == [("q7", "a7"), ("q8", "a8"), ("q9", "a9")]
    assert [m.content for m in w.prompt("now").messages[1:]] == ["q7", "a7", "q8", "a8", "q9", "a9", "now"]
    assert len(Worker(MODEL, memory_size=0).prompt("now").messages) == 2
