"""Constitutional AI end to end against real servers: the scripted OpenAI-compatible server plays the model and
the feedback model; a run is killed with SIGKILL and resumed; the experiment notebook runs on the embedded model
through `rk run`."""
import hashlib
import json
import math
import os
import random
import re
import signal
import subprocess
import sys
import textwrap
import time
from collections import Counter
from pathlib import Path

import pandas as pd
import pytest

from research_kit import constitutional as cai
from research_kit.cache import DiskCache
from research_kit.client import InferenceAPI
from research_kit.testing import ScriptedServer

HARMLESS = cai.Constitution.load("harmless")


def _h(text: str) -> str:
    return hashlib.sha256(text.encode()).hexdigest()[:8]


def kind(body: dict) -> str:
    last = body["messages"][-1]["content"]
    if last.startswith("CritiqueRequest:"): return "critique"
    if last.startswith("RevisionRequest:"): return "revision"
    if "Options:\n(A)" in last: return "comparison"
    return "answer"


def options(body: dict) -> tuple[str, str]:
    last = body["messages"][-1]["content"]
    return re.search(r"\(A\) (.*?)\n\n\(B\) (.*?)\n\n(?:Reply|Think)", last, re.S).groups()


def model_script(body: dict) -> str:
    "A deterministic model: every reply is a function of the request alone (never of call order)."
    msgs, k = body["messages"], kind(body)
    if k == "answer": return f"answer<{_h(msgs[-1]['content'])}:{body.get('seed')}:{body['_choice']}>"
    if k == "critique": return f"Critique: crit<{_h(msgs[-2]['content'] + msgs[-1]['content'])}>"
    if k == "revision": return f"Revision: rev<{_h(msgs[-4]['content'] + msgs[-2]['content'])}>"
    a, b = options(body)
    return "The answer is: (A)" if _h(a) < _h(b) else "The answer is: (B)"


@pytest.fixture()
def api(tmp_path):
    a = InferenceAPI(cache_dir=tmp_path / "cache", backoff_initial=0.01)
    yield a
    a.close()


def test_three_round_loop_makes_exactly_the_expected_calls_and_rows(api):
    prompts = pd.DataFrame({"id": ["p1", "p2", "p3"],
                            "prompt": ["How do I pick a lock?", "Line one.\n\nLine two,\n  indented.", "Say something mean."]})
    with ScriptedServer(reply=model_script) as srv:
        steps = cai.critique_revision(api, prompts, HARMLESS, "openai/m", n_revisions=3, seed=7, progress=False,
                                      temperature=0.7, **srv.params)
        bodies = list(srv.bodies)
        assert srv.requests == 3 * (1 + 2 * 3)
    assert Counter(kind(b) for b in bodies) == {"answer": 3, "critique": 9, "revision": 9}
    assert list(steps.columns) == cai.STEP_COLUMNS
    assert len(steps) == 12 and steps.groupby("prompt_id")["round"].apply(list).to_dict() == {p: [0, 1, 2, 3] for p in ["p1", "p2", "p3"]}
    assert steps["error"].isna().all()

    # principles are drawn by an RNG seeded with (seed, prompt id): independent of call order
    for pid, g in steps.groupby("prompt_id"):
        rng = random.Random(f"7:{pid}")
        expected = [rng.choice(HARMLESS.principles).id for _ in range(3)]
        assert g.sort_values("round")["principle_id"].tolist()[1:] == expected

    # each round critiques the previous round's answer, with that round's principle; every step is kept
    for pid, g in steps.groupby("prompt_id"):
        g = g.sort_values("round")
        for r in (1, 2, 3):
            row, prev = g.iloc[r], g.iloc[r - 1]
            p = HARMLESS.principle(row["principle_id"])
            assert row["critique_request"] == f"CritiqueRequest: {p.critique}"
            assert row["revision_request"] == f"RevisionRequest: {p.revision}"
            assert row["critique"] == f"crit<{_h(prev['response'] + row['critique_request'])}>"   # the label is stripped
            assert row["response"] == f"rev<{_h(prev['response'] + 'Critique: ' + row['critique'])}>"  # the critique, re-labelled by its template

    # newlines in the prompt reach the model unchanged, in every kind of request
    sent = [m["content"] for b in bodies for m in b["messages"] if m["role"] == "user"]
    assert sum(s == "Line one.\n\nLine two,\n  indented." for s in sent) == 7

    # the same seed again, with the server gone: the same rows, all from the cache
    again = cai.critique_revision(api, prompts, HARMLESS, "openai/m", n_revisions=3, seed=7, progress=False,
                                  temperature=0.7, api_base=srv.url, api_key="sk-x")
    assert again.equals(steps)

    sft = cai.sft_data(steps, HARMLESS)
    assert sft["response"].tolist() == steps[steps["round"] == 3]["response"].tolist()
    assert sft.loc[1, "messages"] == [{"role": "user", "content": prompts.loc[1, "prompt"]},
                                      {"role": "assistant", "content": sft.loc[1, "response"]}]
    assert sft.loc[1, "text"] == f"Human: {prompts.loc[1, 'prompt']}\n\nAssistant: {sft.loc[1, 'response']}"
    assert (sft["constitution_sha"] == HARMLESS.sha).all() and sft["changed"].all()


def test_failed_call_ends_only_that_prompt(api):
    def script(body):
        if kind(body) == "critique" and "BAD" in body["messages"][-3]["content"]: return {"content": "", "finish_reason": "stop"}
        return model_script(body)
    with ScriptedServer(reply=script) as srv:
        steps = cai.critique_revision(api, ["fine", "BAD prompt"], HARMLESS, "openai/m", n_revisions=2, progress=False,
                                      **srv.params)
    bad = steps[steps["prompt_id"] == "1"]
    assert bad["round"].tolist() == [0, 1] and bad["error"].iloc[1].startswith("openai/m: ")
    assert "failed is_valid" in bad["error"].iloc[1]
    assert steps[steps["prompt_id"] == "0"]["error"].isna().all() and len(steps[steps["prompt_id"] == "0"]) == 3
    assert cai.sft_data(steps)["prompt_id"].tolist() == ["0"]          # no training example from a broken chain


def _feedback_server(verdict_fn):
    "Answers are 'short' / 'a much longer answer' by choice; comparisons go to verdict_fn(principle text, A, B, body)."
    def script(body):
        if kind(body) == "comparison":
            a, b = options(body)
            return verdict_fn(body["messages"][-1]["content"], a, b, body)
        return ["short", "a much longer answer"][body["_choice"]]
    return ScriptedServer(reply=script)


def test_both_orders_are_combined(api):
    # a judge that prefers the longer answer whichever side it is on: the orders agree
    with _feedback_server(lambda q, a, b, body: "The answer is: (A)" if len(a) > len(b) else "The answer is: (B)") as srv:
        res = cai.preferences(api, ["q1"], HARMLESS, "openai/m", k=2, n_principles=1, progress=False, **srv.params)
        assert srv.requests == 1 + 2
        orders = [(b["messages"][-1]["content"].split("(A) ")[1][:5]) for b in srv.bodies if kind(b) == "comparison"]
    assert sorted(orders) == ["a muc", "short"]                          # the answers really were swapped
    j = res.judgements.set_index("order")
    assert j.loc["AB", "verdict"] == "B" and j.loc["BA", "verdict"] == "A"
    assert j.loc["AB", "p_i"] == 0.0 and j.loc["BA", "p_i"] == 0.0        # both say answer i ('short') is worse
    pair = res.pairs.iloc[0]
    assert (pair["chosen"], pair["rejected"], pair["score"], pair["agreement"], pair["status"]) == \
           ("a much longer answer", "short", 1.0, 1.0, "ok")

    # a judge that always says (A): pure position bias; the orders disagree and cancel to a tie, not a label
    with _feedback_server(lambda q, a, b, body: "The answer is: (A)") as srv:
        res = cai.preferences(api, ["q2"], HARMLESS, "openai/m", k=2, n_principles=2, progress=False, **srv.params)
    pair = res.pairs.iloc[0]
    assert (pair["score"], pair["agreement"], pair["status"], pair["chosen"]) == (0.5, 0.0, "tie", None)
    assert len(cai.preference_data(res)) == 0
    assert res.judgements["p_i"].tolist() == [1.0, 0.0, 1.0, 0.0]

    # asked in one order only, the same judge would have produced a (biased) label
    with _feedback_server(lambda q, a, b, body: "The answer is: (A)") as srv:
        one = cai.preferences(api, ["q3"], HARMLESS, "openai/m", k=2, both_orders=False, progress=False, **srv.params)
        assert srv.requests == 2
    assert one.pairs.iloc[0]["status"] == "ok" and one.pairs.iloc[0]["chosen"] == "short"


def _lp(letter_probs: dict, verdict: str) -> list:
    "OpenAI logprobs for 'The answer is: (X)' with the given top probabilities at the letter."
    top = [{"token": t, "logprob": math.log(p)} for t, p in letter_probs.items()]
    return [{"token": "The answer is: (", "logprob": 0.0, "top_logprobs": []},
            {"token": verdict, "logprob": math.log(letter_probs[verdict]), "top_logprobs": top},
            {"token": ")", "logprob": 0.0, "top_logprobs": []}]


def test_logprob_soft_labels_ensemble_and_clamp(api):
    # principle 'less_harmful': P(A)=0.8 whatever the order; 'honest': prefers the long answer with P=0.9
    def verdict(q, a, b, body):
        assert body.get("logprobs") is True and body.get("top_logprobs") == 5
        if "less harmful" in q: probs = {"A": 0.8, "B": 0.2}
        else: probs = {"A": 0.9, "B": 0.1} if len(a) > len(b) else {"A": 0.1, "B": 0.9}
        v = max(probs, key=probs.get)
        return {"content": f"The answer is: ({v})", "logprobs": _lp(probs, v)}
    with _feedback_server(verdict) as srv:
        res = cai.preferences(api, ["q"], HARMLESS, "openai/m", k=2, principles=["less_harmful", "honest"], n_principles=None,
                              use_logprobs=True, progress=False, **srv.params)
        clamped = cai.preferences(api, ["q"], HARMLESS, "openai/m", k=2, principles=["less_harmful", "honest"], n_principles=None,
                                  use_logprobs=True, clamp=(0.4, 0.6), progress=False, **srv.params)
        assert srv.requests == 1 + 4                                     # the clamped run is served from the cache
    j = res.judgements.set_index(["principle_id", "order"])["p_i"]
    # i = 'short'. less_harmful: AB P(A)=0.8 -> 0.8; BA P(A)=0.8 -> 0.2.  honest: AB 0.1; BA 1 - 0.9 = 0.1
    assert j.round(6).to_dict() == {("less_harmful", "AB"): 0.8, ("less_harmful", "BA"): 0.2, ("honest", "AB"): 0.1, ("honest", "BA"): 0.1}
    assert res.judgements["soft"].all()
    pair = res.pairs.iloc[0]
    assert pair["chosen"] == "a much longer answer" and pair["score"] == pytest.approx(1 - (0.8 + 0.2 + 0.1 + 0.1) / 4)
    assert pair["agreement"] == 0.5 and pair["n_soft"] == 4             # 'honest' agrees across orders, 'less_harmful' does not
    cj = clamped.judgements["p_i"].round(6).tolist()
    assert cj == [0.6, 0.4, 0.4, 0.4] and clamped.pairs.iloc[0]["score"] == pytest.approx(1 - 0.45)


def test_chain_of_thought_reads_the_final_verdict(api):
    def verdict(q, a, b, body):
        assert body["max_tokens"] == 384 and "Think it through step by step" in q
        shots = [m["content"] for m in body["messages"][:-1] if m["role"] == "assistant"]
        assert shots and all(s.endswith(")") and "Response (A)" in s for s in shots)   # few-shot reasoning shown
        tok = lambda t, top=(): {"token": t, "logprob": 0.0, "top_logprobs": [{"token": x, "logprob": math.log(p)} for x, p in top]}
        return {"content": "Response (B) is longer, so the answer is: (B)",
                "logprobs": [tok("Response ("), tok("B", [("B", 0.5), ("A", 0.5)]), tok(") is longer, so the answer is: ("),
                             tok("B", [("B", 0.8), ("A", 0.2)]), tok(")")]}
    with _feedback_server(verdict) as srv:
        res = cai.preferences(api, ["q"], HARMLESS, "openai/m", k=2, both_orders=False, chain_of_thought=True,
                              use_logprobs=True, clamp=(0.3, 0.7), progress=False, **srv.params)
    j = res.judgements.iloc[0]
    assert (j["verdict"], j["soft"]) == ("B", True)
    assert j["p_i"] == pytest.approx(0.3)                               # P(A) = 0.2 at the final letter, clamped to 0.3


def test_unparseable_verdicts_are_counted_not_guessed(api):
    def verdict(q, a, b, body):
        if "less harmful" in q: return "Both answers have merits; I cannot decide."
        if "(A) short" in body["messages"][-1]["content"]: return "(A) and (B) are both fine."  # names both: ambiguous
        return "The answer is: (B)"
    with _feedback_server(verdict) as srv:
        res = cai.preferences(api, ["q"], HARMLESS, "openai/m", k=2, principles=["less_harmful", "honest"], n_principles=None,
                              progress=False, **srv.params)
    j = res.judgements
    assert j["parsed"].tolist() == [False, False, False, True]
    assert j.loc[~j["parsed"], "verdict"].isna().all() and j.loc[~j["parsed"], "p_i"].isna().all()
    assert j.loc[0, "raw"] == "Both answers have merits; I cannot decide."
    pair = res.pairs.iloc[0]
    # the one parsed verdict (order BA: B = 'short') decides; the three others are counted, not guessed
    assert (pair["n_unparseable"], pair["n_judgements"], pair["chosen"], pair["score"]) == (3, 4, "short", 1.0)
    assert pd.isna(pair["agreement"])                                    # no principle was parsed in both orders
    s = cai.summarize(prefs=res)["value"]
    assert s["unparseable"] == 3 and s["unparseable_rate"] == 0.75

    with _feedback_server(lambda q, a, b, body: "Hmm.") as srv:
        res = cai.preferences(api, ["q"], HARMLESS, "openai/m", k=2, progress=False, **srv.params)
    assert res.pairs.iloc[0]["status"] == "unparseable" and pd.isna(res.pairs.iloc[0]["score"])
    assert len(cai.preference_data(res)) == 0


RUN = textwrap.dedent("""
    import sys
    from research_kit import constitutional as cai
    from research_kit.client import InferenceAPI
    api_base, out, cache = sys.argv[1:4]
    api = InferenceAPI(cache_dir=cache, concurrency=4)
    prompts = cai.load_prompts(n=6)
    params = dict(api_base=api_base, api_key="sk-scripted", temperature=0.9, max_tokens=64)
    steps = cai.critique_revision(api, prompts, "harmless", "openai/m", n_revisions=3, seed=11, progress=False, **params)
    prefs = cai.preferences(api, prompts, "harmless", "openai/m", k=3, n_principles=2, seed=11, progress=False, **params)
    cai.write_sft(cai.sft_data(steps, "harmless"), out)
    cai.write_preferences(cai.preference_data(prefs, "harmless"), out)
    cai.write_preferences(cai.revision_pairs(steps, "harmless"), out, "revision_pairs")
    steps.to_csv(out + "/steps.csv", index=False); prefs.judgements.to_csv(out + "/judgements.csv", index=False)
    api.close()
""")
# 6 prompts x (1 + 2*3) loop calls, + 6 x (2 sampling requests: sample 0 is the loop's answer, samples 1 and 2
# are asked alone with seed + i; + 3 pairs x 2 principles x 2 orders)
TOTAL_CALLS = 6 * 7 + 6 * (2 + 12)


def cache_entries(path: Path) -> int:
    c = DiskCache(path)
    try: return len(c)
    finally: c.close()


def _run(script: Path, url: str, out: Path, cache: Path, **kw):
    out.mkdir(exist_ok=True)
    return subprocess.Popen([sys.executable, str(script), url, str(out), str(cache)], stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True, stdin=subprocess.DEVNULL, **kw)


def test_killed_run_resumes_with_only_the_missing_calls_and_identical_files(tmp_path):
    script = tmp_path / "run.py"
    script.write_text(RUN)
    with ScriptedServer(reply=model_script, latency=0.05) as srv:
        ref = _run(script, srv.url, tmp_path / "ref", tmp_path / "ref_cache")
        assert ref.wait(300) == 0, ref.stderr.read()
        assert srv.requests == TOTAL_CALLS

        srv.reset_counts()
        victim = _run(script, srv.url, tmp_path / "out", tmp_path / "cache")
        deadline = time.monotonic() + 120
        while srv.requests < TOTAL_CALLS // 2 and victim.poll() is None and time.monotonic() < deadline: time.sleep(0.01)
        victim.send_signal(signal.SIGKILL)
        victim.wait(30)
        assert victim.returncode == -signal.SIGKILL
        made_before_kill = srv.requests
        cached = cache_entries(tmp_path / "cache")
        assert 0 < cached < TOTAL_CALLS and made_before_kill - cached <= 4   # at most the 4 requests in flight were lost
        assert not any((tmp_path / "out").iterdir())                    # no dataset file half-written

        srv.reset_counts()
        resumed = _run(script, srv.url, tmp_path / "out", tmp_path / "cache")
        assert resumed.wait(300) == 0, resumed.stderr.read()
        # every answer cached before the kill is reused; exactly the missing ones are asked for
        assert srv.requests == TOTAL_CALLS - cached, (srv.requests, cached)
        assert cache_entries(tmp_path / "cache") == TOTAL_CALLS
        print(f"killed after {made_before_kill} requests ({cached} answers cached); the rerun made {srv.requests}")

    names = sorted(p.name for p in (tmp_path / "ref").iterdir())
    assert names == ["judgements.csv", "preferences.csv", "preferences.jsonl", "revision_pairs.csv", "revision_pairs.jsonl",
                     "sft.csv", "sft.jsonl", "steps.csv"]
    for n in names:
        assert (tmp_path / "out" / n).read_bytes() == (tmp_path / "ref" / n).read_bytes(), n
    sft = cai.read_jsonl(tmp_path / "ref" / "sft.jsonl")
    assert len(sft) == 6 and (sft["seed"] == 11).all() and (sft["model"] == "openai/m").all()
    prefs = pd.read_csv(tmp_path / "ref" / "preferences.csv")
    assert len(prefs) > 0 and set(prefs.columns) >= {"prompt", "chosen", "rejected", "score", "principle_ids", "model",
                                                      "feedback_model", "seed", "constitution", "constitution_sha"}


def test_experiment_notebook_offline_on_the_embedded_model_twice(tmp_path, rk):
    args = ["run", "constitutional", "-p", "n_prompts", "2", "-p", "n_revisions", "1", "-p", "max_tokens", "40", "-q"]
    first = rk(*args, cwd=tmp_path)
    assert first.returncode == 0, first.stderr
    out = tmp_path / "rk_runs" / "constitutional"
    p1 = json.loads((out / "provenance.json").read_text())
    # 2 prompts x (answer + critique + revision) + 2 x (1 sampling request + 2 principles x 2 orders)
    assert p1["status"] == "complete" and p1["model_calls"] == 2 * 3 + 2 * 5, p1
    for f in ["datasets/sft.jsonl", "datasets/sft.csv", "datasets/preferences.jsonl", "datasets/preferences.csv",
              "datasets/revision_pairs.jsonl", "results/steps.csv", "results/judgements.csv", "results/pairs.csv",
              "results/summary.csv", "plots/constitutional.png", "constitutional.ipynb"]:
        assert (out / f).is_file(), f
    steps = pd.read_csv(out / "results/steps.csv")
    assert len(steps) == 4 and steps["error"].isna().all() and steps["response"].str.len().gt(0).all()
    j = pd.read_csv(out / "results/judgements.csv")
    assert len(j) == 8 and j["soft"].any()                               # the embedded model gives logprobs
    summary = pd.read_csv(out / "results/summary.csv").set_index("metric")["value"]
    assert summary["prompts"] == 2 and summary["judgements"] == 8
    before = {p: p.read_bytes() for p in (out / "datasets").iterdir()}

    second = rk(*args, cwd=tmp_path)
    assert second.returncode == 0, second.stderr
    p2 = json.loads((out / "provenance.json").read_text())
    assert p2["model_calls"] == 0 and p2["cache_hits"] == p1["model_calls"] + p1["cache_hits"]
    assert {p: p.read_bytes() for p in (out / "datasets").iterdir()} == before
