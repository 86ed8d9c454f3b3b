"""research_kit.rubric.grading against a real OpenAI-compatible server: research_kit.testing.ScriptedServer plays the
grader, answering in JSON, TSV, CSV, a markdown table or not at all, and records every request body, so each test
asserts what actually reached the server: how many requests, with which `n`, `temperature`, `max_tokens` and
`response_format`, and what a rerun asks again (valid answers are cached, invalid ones never).
"""
import asyncio
import io
import json

import pandas as pd
import pytest

from research_kit.basics import run_sync
from research_kit.client import InferenceAPI
from research_kit.rubric.data import Experiment, LabelSet, Params
from research_kit.rubric.grading import (
    GradingTooLarge, InvalidGrading, agrade, assess, response_schema)
from research_kit.testing import ScriptedServer

RUBRIC = ("Key Concept,Instructions,Extensive Evidence,Convincing Evidence,Limited Evidence,No Evidence\n"
          "Sprites,Count the sprites.,3 or more,2,1,none\n"
          'Movement,"Find movement, random or counter.",both,one,direct control only,none\n')
CONCEPTS = ["Sprites", "Movement"]
CODE = "var a = createSprite(200, 200); // the player\na.x = a.x + 1;"
E, C, L, N = "Extensive Evidence", "Convincing Evidence", "Limited Evidence", "No Evidence"


def experiment(**params) -> Experiment:
    return Experiment(name="exp", lesson="l1", path="", params=Params(**{"model": "openai/grader", **params}),
                      system_prompt="Grade the student's program.", rubric=RUBRIC,
                      rubric_table=pd.read_csv(io.StringIO(RUBRIC), dtype=str), concepts=CONCEPTS,
                      examples=[("drawSprites();", as_json({"Sprites": N, "Movement": N}))], confidence=None)


def rows(labels: dict, tag: str = "") -> list[dict]:
    return [{"Key Concept": c, "Observations": f"seen {c}{tag}", "Label": l, "Reason": f"because {c}{tag}"} for c, l in labels.items()]


def as_json(labels, tag=""):
    return "Here is the grading:\n```json\n" + json.dumps(rows(labels, tag), indent=2) + "\n```"


def as_table(labels, sep="\t", tag=""):
    lines = [sep.join(["Key Concept", "Observations", "Grade", "Reason"])] + [sep.join(r.values()) for r in rows(labels, tag)]
    if sep == ",": lines = [lines[0]] + [",".join(f'"{v}"' for v in r.values()) for r in rows(labels, tag)]
    if sep == " | ": lines = [f"| {lines[0]} |", "|---|---|---|---|"] + [f"| {l} |" for l in lines[1:]]
    return "Sure. Grading each Key Concept below.\n\n" + "\n".join(lines)


def grade(api, srv, code=CODE, **kw):
    exp = kw.pop("exp", None) or experiment(**{k: kw.pop(k) for k in list(kw) if k in Params.__dataclass_fields__})
    return run_sync(agrade(api, code, experiment=exp, student="s1", **kw, **srv.params))


LABELS = {"Sprites": C, "Movement": L}
FORMATS = {"json": (as_json(LABELS), "json"), "tsv": (as_table(LABELS), "tsv"), "csv": (as_table(LABELS, ","), "tsv"),
           "markdown": (as_table(LABELS, " | "), "tsv"), "escaped-tsv": (as_table(LABELS).replace("\t", "\\t"), "tsv")}


@pytest.mark.parametrize("fmt", FORMATS)
def test_each_answer_format_grades_in_one_request(tmp_path, fmt):
    answer, response_type = FORMATS[fmt]
    api = InferenceAPI(cache_dir=tmp_path)
    with ScriptedServer(reply=answer) as srv:
        g = grade(api, srv, num_responses=3, response_type=response_type, temperature=0.4)
        assert srv.requests == 1 and srv.bodies[0]["n"] == 3  # one request for the three answers
        assert srv.bodies[0]["temperature"] == 0.4 and "max_tokens" not in srv.bodies[0] and "response_format" not in srv.bodies[0]
    assert (g.status, g.n_requested, g.n_valid, g.n_invalid, g.labels) == ("ok", 3, 3, 0, LABELS)
    assert [v.votes for v in g.votes] == [{C: 3}, {L: 3}] and not any(v.split for v in g.votes)
    assert g.rows[0] == {"Key Concept": "Sprites", "Observations": "seen Sprites", "Label": C, "Reason": "because Sprites"}
    assert g.prompt_tokens > 0 and g.completion_tokens > 0 and not g.cached and len(g.responses) == 3


def test_the_prompt_that_reaches_the_server(tmp_path):
    api = InferenceAPI(cache_dir=tmp_path)
    with ScriptedServer(reply=as_json(LABELS)) as srv:
        grade(api, srv, response_type="json", remove_comments=True)
        msgs = srv.bodies[0]["messages"]
    assert [m["role"] for m in msgs] == ["system", "user", "assistant", "user"]
    assert msgs[0]["content"] == "Grade the student's program.\n\nRubric:\n" + RUBRIC
    assert msgs[1]["content"] == "drawSprites();" and json.loads(msgs[2]["content"].split("```json\n")[1].split("```")[0])[0]["Label"] == N
    assert msgs[3]["content"] == "var a = createSprite(200, 200); \na.x = a.x + 1;"  # the comment removed, the lines kept


def test_invalid_answers_are_retried_never_cached_and_a_rerun_asks_only_for_them(tmp_path):
    first = []
    def grader(body):  # the first request's choices: valid, invalid, valid; every later request: invalid
        if body["_choice"] == 0: first.append(not first)
        if first[-1] and body["_choice"] != 1: return as_json(LABELS)
        return as_json({"Sprites": "Great Evidence", "Movement": L})
    api = InferenceAPI(cache_dir=tmp_path)  # max_invalid_retries=2: three rounds in all
    with ScriptedServer(reply=grader) as srv:
        g = grade(api, srv, num_responses=3, response_type="json")
        assert srv.requests == 3 and [b.get("n") for b in srv.bodies] == [3, None, None]  # the invalid one asked twice more, alone
        assert (g.status, g.n_valid, g.n_invalid, g.n_too_large, g.labels) == ("ok", 2, 1, 0, LABELS)
        assert g.error is None and [v.n for v in g.votes] == [2, 2]  # votes over the valid answers only

        srv.reset_counts()
        again = grade(api, srv, num_responses=3, response_type="json")  # the same grading, rerun
        assert srv.requests == 3 and [b.get("n") for b in srv.bodies] == [None] * 3  # only sample 1 again: never cached
        assert (again.status, again.n_valid, again.n_invalid, again.cached) == ("ok", 2, 1, False)

    with ScriptedServer(reply=as_json(LABELS)) as srv:  # now the grader answers well: one request, then all cached
        third = grade(api, srv, num_responses=3, response_type="json")
        assert srv.requests == 1 and (third.n_valid, third.n_invalid, third.cached) == (3, 0, False)
        fourth = grade(api, srv, num_responses=3, response_type="json")
        assert srv.requests == 1 and fourth.cached and fourth.labels == LABELS and fourth.latency_s < 1


def test_votes_each_tie_rule_and_a_split_reason(tmp_path):
    def grader(body):  # per choice of a request: Sprites E, L, E, L ... ; Movement always N; tagged request.choice
        i = body["_choice"]
        return as_json({"Sprites": (E, L)[i % 2], "Movement": N}, tag=f" #{len(srv.bodies)}.{i}")
    api = InferenceAPI(cache_dir=tmp_path)
    with ScriptedServer(reply=grader) as srv:
        ties = {tie: grade(api, srv, num_responses=2, response_type="json", tie=tie) for tie in ("lower", "higher", "first")}
        assert srv.requests == 1  # the same two answers, voted three ways
        assert {t: g.labels["Sprites"] for t, g in ties.items()} == {"lower": L, "higher": E, "first": E}
        v = ties["lower"].votes[0]
        assert (v.votes, v.n, v.agree, v.split) == ({E: 1, L: 1}, 2, 1, True)
        assert v.reason == "[split vote: Extensive Evidence 1, Limited Evidence 1] because Sprites #1.1"

        g = grade(api, srv, num_responses=3, response_type="json")  # answers 0 and 1 cached; answer 2 asked alone: E
        assert srv.requests == 2 and srv.bodies[1].get("n") is None
    s, m = g.votes
    assert (s.label, s.votes, s.agree, s.split) == (E, {E: 2, L: 1}, 2, True)
    assert s.observations == "seen Sprites #1.0" and s.reason == "[split vote: Extensive Evidence 2, Limited Evidence 1] because Sprites #2.0"
    assert (m.label, m.split, m.reason) == (N, False, "because Movement #2.0")  # unanimous: the last answer's reason, unmarked


def test_answers_cut_off_at_max_tokens_are_too_large(tmp_path):
    api = InferenceAPI(cache_dir=tmp_path)
    with ScriptedServer(reply=as_json(LABELS)) as srv:  # the server cuts at max_tokens and says finish_reason 'length'
        g = grade(api, srv, num_responses=2, response_type="json", max_tokens=20)
        assert srv.requests == 3 and [b["max_tokens"] for b in srv.bodies] == [20] * 3  # 3 rounds, none cached
    assert (g.status, g.n_requested, g.n_valid, g.n_invalid, g.n_too_large, g.votes) == ("too_large", 2, 0, 2, 2, [])
    assert "token limit" in g.error


def test_answers_that_are_no_grading_are_invalid(tmp_path):
    api = InferenceAPI(cache_dir=tmp_path)
    with ScriptedServer(reply="I am not able to grade this program.") as srv:
        g = grade(api, srv, num_responses=2)
        assert srv.requests == 3 and [b.get("n") for b in srv.bodies] == [2, 2, 2]
    assert (g.status, g.n_valid, g.n_invalid, g.n_too_large) == ("invalid", 0, 2, 0)
    assert g.error.startswith("2 of 2 answer(s) invalid; last: no table header naming 'Key Concept'")


def test_a_failed_request_is_an_error_grading_without_the_key(tmp_path):
    api = InferenceAPI(cache_dir=tmp_path, max_attempts=1)
    with ScriptedServer(faults={"auth": 1.0}) as srv:  # a 401 whose message quotes the key sent
        g = grade(api, srv, num_responses=2)
        assert srv.requests >= 1
    assert (g.status, g.n_requested, g.n_valid, g.votes) == ("error", 2, 0, [])
    assert g.error and srv.params["api_key"] not in g.error and len(g.error) <= 300


def test_blank_code_makes_no_request(tmp_path):
    api = InferenceAPI(cache_dir=tmp_path)
    scale = LabelSet(("Mastery", "Partial", "Beginning"), n_pass=1)
    with ScriptedServer(reply=as_json(LABELS)) as srv:
        g = grade(api, srv, code="  \n// my game will go here\n/* later */\n", label_set=scale)
        assert srv.requests == 0
    assert (g.status, g.n_requested, g.labels) == ("blank", 0, {"Sprites": "Beginning", "Movement": "Beginning"})
    assert {r["Reason"] for r in g.rows} == {"The program is empty."}


def test_structured_output_sends_the_schema(tmp_path):
    api = InferenceAPI(cache_dir=tmp_path)
    with ScriptedServer(reply=as_json(LABELS)) as srv:
        g = grade(api, srv, num_responses=2, response_type="json", structured_output=True, max_tokens=600)
        body = srv.bodies[0]
        assert body["response_format"] == {"type": "json_schema", "json_schema": {"name": "rubric_grading", "schema": response_schema(CONCEPTS)}}
        assert (body["max_tokens"], body["n"], g.status) == (600, 2, "ok")
        grade(api, srv, structured_output=True)  # a TSV experiment: no schema sent
        assert "response_format" not in srv.bodies[1]


def test_assess_answers_in_code_orgs_shape(tmp_path):
    api = InferenceAPI(cache_dir=tmp_path)
    with ScriptedServer(reply=as_table(LABELS)) as srv:
        out = assess(CODE, "Grade the program.", RUBRIC, examples=[["drawSprites();", as_table({"Sprites": N, "Movement": N})]],
                     model="openai/grader", num_responses=2, api=api, **srv.params)
        assert srv.requests == 1 and srv.bodies[0]["n"] == 2 and srv.bodies[0]["temperature"] == 0.2
        blank = assess("", "Grade the program.", RUBRIC, api=api, **srv.params)
        assert srv.requests == 1
    meta = out["metadata"]
    assert set(meta) == {"agent", "model", "status", "num_responses", "n_valid", "usage", "cost_usd", "cached", "time"}
    assert (meta["agent"], meta["model"], meta["num_responses"], meta["n_valid"], meta["cached"]) == ("research_kit", "openai/grader", 2, 2, False)
    assert meta["usage"]["total_tokens"] == meta["usage"]["prompt_tokens"] + meta["usage"]["completion_tokens"] > 0
    assert out["data"] == [{"Key Concept": r["Key Concept"], "Observations": r["Observations"], "Label": r["Label"], "Reason": r["Reason"]}
                           for r in rows(LABELS)]
    assert [r["Label"] for r in blank["data"]] == [N, N] and blank["metadata"]["status"] == "blank"


def test_assess_raises_what_the_proxy_maps_to_400_and_413(tmp_path):
    api = InferenceAPI(cache_dir=tmp_path, max_invalid_retries=0)
    with ScriptedServer(reply=as_json({"Sprites": C})) as srv:  # Movement missing
        with pytest.raises(InvalidGrading, match=r"key concept\(s\) \['Movement'\] not graded") as e:
            assess(CODE, "Grade.", RUBRIC, model="openai/grader", response_type="json", api=api, **srv.params)
        assert type(e.value) is InvalidGrading
        with pytest.raises(GradingTooLarge, match="token limit"):
            assess(CODE, "Grade.", RUBRIC, model="openai/grader", response_type="json", api=api, max_tokens=10, **srv.params)
        with pytest.raises(ValueError, match=r"examples\[0\]"):
            assess(CODE, "Grade.", RUBRIC, examples=[["x", "not a grading"]], api=api, **srv.params)
        assert srv.requests == 2


def test_many_artifacts_graded_concurrently(tmp_path):
    api = InferenceAPI(cache_dir=tmp_path)
    exp = experiment(num_responses=2, response_type="json")
    async def run_all():
        return await asyncio.gather(*(agrade(api, f"var s{i} = createSprite({i}, 0);", experiment=exp, student=f"s{i}", **srv.params)
                                      for i in range(20)))
    with ScriptedServer(reply=as_json(LABELS)) as srv:
        out = run_sync(run_all())
        assert srv.requests == 20
    assert [g.student for g in out] == [f"s{i}" for i in range(20)] and {g.status for g in out} == {"ok"}
