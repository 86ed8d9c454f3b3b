"""Benchmark: the embedded model's JSON-constrained generation, fast (research_kit.local) beside llama-cpp-python's own.

    .venv/bin/python tests/bench_grammar.py [--tokens 400] [--rounds 2] [--k 64] [--no-provider]

One prompt (a rubric grading: a short rubric, a student's program, "answer in JSON"), one rubric-like JSON schema (an
array of exactly 3 objects: "Key Concept" a const, "Observations" a string of at most 300 characters, "Label" one of
4 labels, "Reason" a string of at most 300 characters), temperature 0, one model, one process. Paths, alternating
round by round (order flipped every round) so that drift in a shared machine's speed hits them all:
1. plain: no grammar, no stop sequences, as many tokens as the grammar answer has, llama-cpp-python's create_completion.
2. slow grammar: llama-cpp-python's create_completion(grammar=...): its grammar sampler checks every one of the
   262,144 tokens of the vocabulary at every step.
3. fast grammar: LocalModel.generate(grammar=...): the grammar checks the model's top K tokens first, and only when none
   passes the tokens that an index of the vocabulary says it may allow (research_kit.local, "Fast structured output").
Tokens/s is completion tokens over wall seconds (prompt processing included; the prompt is the same for all paths).
Then the fast path's text is compared with the slow path's (at temperature 0 they must be equal), its full checks are
counted, and one call goes through InferenceAPI with response_format (litellm, the provider, the cache off): the end
to end time of a grading. Prints figures; asserts only that the fast and slow texts are equal (exit 1 otherwise).
The machine's load average is printed: on a shared 2-core machine the figures move with it.
"""
import argparse
import json
import os
import statistics
import sys
import time

import research_kit.local as local  # registers local/gemma-3-270m; import before litellm
from llama_cpp.llama_grammar import LlamaGrammar

LABELS = ["Extensive Evidence", "Convincing Evidence", "Limited Evidence", "No Evidence"]
SCHEMA = {"type": "array", "minItems": 3, "maxItems": 3, "items": {"type": "object", "properties": {
    "Key Concept": {"const": "Key Concept"}, "Observations": {"type": "string", "maxLength": 300},
    "Label": {"enum": LABELS}, "Reason": {"type": "string", "maxLength": 300}},
    "required": ["Key Concept", "Observations", "Label", "Reason"], "additionalProperties": False}}
RESPONSE_FORMAT = {"type": "json_schema", "json_schema": {"name": "grading", "schema": SCHEMA}}
RUBRIC = """Key Concept,Instructions,Extensive Evidence,Convincing Evidence,Limited Evidence,No Evidence
Program Development,Does the program use functions?,Two or more functions,One function,Code but no functions,No code
Variables,Does the program use variables?,Variables updated and used,Variables used,A variable is declared,No variables
Conditionals,Does the program branch?,Nested conditionals,One conditional,A conditional that never runs,No conditionals"""
CODE = """var score = 0;
function addPoint() { score = score + 1; }
function draw() {
  if (score > 3) { background("green"); } else { background("red"); }
  addPoint();
  text(score, 200, 200);
}"""
EXAMPLE_CODE = """var x = 10;
function move() { x = x + 5; }
move();"""
EXAMPLE = [{"Key Concept": "Key Concept", "Observations": "The program defines one function, move, and calls it once at the "
            "end. There is no other function, so the drawing code is not organised into functions.",
            "Label": "Convincing Evidence", "Reason": "Exactly one function is defined and used."},
           {"Key Concept": "Key Concept", "Observations": "The variable x is declared with the value 10 and move adds 5 to it, "
            "so the variable is both updated and used.",
            "Label": "Extensive Evidence", "Reason": "A variable is declared, updated by a function and used."},
           {"Key Concept": "Key Concept", "Observations": "There is no if statement anywhere in the program, so it never "
            "branches: every line runs every time.",
            "Label": "No Evidence", "Reason": "The program has no conditionals."}]
MESSAGES = [{"role": "system", "content": "You are a teacher grading a student's program against a rubric. For each key "
             "concept write your observations, a label and a reason, as a JSON array.\n\nRubric:\n" + RUBRIC},
            {"role": "user", "content": EXAMPLE_CODE}, {"role": "assistant", "content": json.dumps(EXAMPLE)},
            {"role": "user", "content": CODE}]


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--tokens", type=int, default=400, help="max_tokens per call")
    ap.add_argument("--rounds", type=int, default=2, help="calls per path")
    ap.add_argument("--k", type=int, default=local._GRAMMAR_TOP_K, help="candidates the grammar checks first")
    ap.add_argument("--no-provider", action="store_true", help="skip the InferenceAPI call")
    args = ap.parse_args()
    local._GRAMMAR_TOP_K = args.k

    lm = local.LocalModel.get()
    t = time.perf_counter(); lm.vocab_index; index_s = time.perf_counter() - t
    prompt, gbnf = local.format_transcript(MESSAGES), local.json_grammar(RESPONSE_FORMAT)
    stop = list(local.load_transcript()["stop"])
    full_checks = [0]
    candidates = local._VocabIndex.candidates
    def counted(self, *a, **kw):
        full_checks[0] += 1
        return candidates(self, *a, **kw)
    local._VocabIndex.candidates = counted

    def fast(): return lm.generate(prompt, max_tokens=args.tokens, temperature=0, stop=stop, grammar=gbnf)
    n_answer = fast()["usage"]["completion_tokens"]  # warm-up; plain text writes as many tokens as the answer has
    full_checks[0] = 0

    def plain():
        with lm.lock:
            lm.llm.reset()
            return lm.llm.create_completion(prompt, max_tokens=n_answer, temperature=0, stop=[], seed=-1)

    def slow():
        with lm.lock:
            lm.llm.reset()
            return lm.llm.create_completion(prompt, max_tokens=args.tokens, temperature=0, stop=stop, seed=-1,
                                            grammar=LlamaGrammar.from_string(gbnf, verbose=False))

    def prompt_only():  # what every path pays before its first token
        with lm.lock:
            lm.llm.reset(); t = time.perf_counter(); lm.llm.eval(lm.llm.tokenize(prompt.encode(), add_bos=True, special=True))
            return time.perf_counter() - t
    prompt_s = statistics.median(prompt_only() for _ in range(3))

    paths = {"plain (no grammar)": plain, "slow grammar (llama-cpp-python)": slow, "fast grammar (research_kit)": fast}
    totals, texts = {n: [0, 0.0] for n in paths}, {}
    for i in range(args.rounds):
        order = list(paths.items())
        for name, fn in (order if i % 2 == 0 else order[::-1]):
            full_before = full_checks[0]
            t = time.perf_counter(); out = fn(); s = time.perf_counter() - t
            n = out["usage"]["completion_tokens"]
            totals[name][0] += n; totals[name][1] += s
            texts.setdefault(name, []).append(out["choices"][0])
            extra = f", full checks {full_checks[0] - full_before}" if fn is fast else ""
            print(f"  round {i + 1} {name}: {n} tokens in {s:.1f} s ({n / s:.1f} tokens/s){extra}", flush=True)

    print(f"\nlocal model, {args.rounds} calls per path, max_tokens={args.tokens}, temperature 0, n_threads={lm.n_threads}, "
          f"top K={args.k}, load average {' '.join(f'{x:.2f}' for x in os.getloadavg())}")
    print(f"  vocabulary index built once per process: {index_s:.2f} s")
    rate = {name: n / s for name, (n, s) in totals.items()}
    print(f"  prompt ({len(lm.llm.tokenize(prompt.encode()))} tokens) processed in {prompt_s:.2f} s (median of 3), in every call")
    print(f"  {'path':34s} {'tokens':>6s} {'seconds':>8s} {'tokens/s':>9s} {'ms/token after the prompt':>26s}")
    for name, (n, s) in totals.items():
        print(f"  {name:34s} {n:6d} {s:8.1f} {rate[name]:9.1f} {1000 * (s - args.rounds * prompt_s) / n:26.1f}")
    f, sl, p = rate["fast grammar (research_kit)"], rate["slow grammar (llama-cpp-python)"], rate["plain (no grammar)"]
    print(f"  fast / slow grammar: {f / sl:.2f}x tokens/s; fast grammar / plain: {f / p:.2f}")
    n_fast = totals["fast grammar (research_kit)"][0]
    print(f"  steps that needed the full check: {full_checks[0]} of {n_fast} ({100 * full_checks[0] / max(n_fast, 1):.0f}%)")

    same = all(a["text"] == b["text"] and a["finish_reason"] == b["finish_reason"]
               for a, b in zip(texts["fast grammar (research_kit)"], texts["slow grammar (llama-cpp-python)"]))
    answer = texts["fast grammar (research_kit)"][0]
    try: json.loads(answer["text"]); valid = "valid JSON"
    except ValueError: valid = "not complete JSON (max_tokens cut it)"
    print(f"  fast text == slow text: {same}; the answer ({answer['finish_reason']}, {valid}):\n    {answer['text'][:600]}")

    if not args.no_provider:
        from research_kit.client import InferenceAPI
        api = InferenceAPI(use_cache=False)
        t = time.perf_counter()
        r = api.call("local/gemma-3-270m", MESSAGES, max_tokens=args.tokens, temperature=0, response_format=RESPONSE_FORMAT)[0]
        s = time.perf_counter() - t
        try: labels = [row["Label"] for row in json.loads(r.completion)]
        except ValueError: labels = "(not complete JSON: max_tokens cut it)"
        print(f"\nInferenceAPI local/gemma-3-270m with response_format (end to end, cache off): {s:.1f} s, "
              f"{r.prompt_tokens} + {r.completion_tokens} tokens, {r.completion_tokens / s:.1f} tokens/s, "
              f"finish {r.finish_reason}, labels {labels}")
    sys.exit(0 if same else 1)


if __name__ == "__main__":
    main()
