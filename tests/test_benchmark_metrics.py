"""Benchmark metrics against values computed by hand (HELM's definitions), and multiple-choice answers mapped
back to their option whatever form the letter takes."""
import math

import pytest

from research_kit.benchmark.adapters import mapped_output, parse_choice_letter
from research_kit.benchmark.metrics import (bleu_1, bleu_4, exact_match, f1_score, final_number_exact_match, prefix_exact_match,
                                            quasi_exact_match, quasi_prefix_exact_match, rouge_l)
from research_kit.benchmark.specs import CORRECT_TAG, Instance, Reference, RequestState
from research_kit.messages import LLMResponse, Prompt

GOLD = "the cat sat on the mat"


@pytest.mark.parametrize("fn, gold, pred, want", [
    (exact_match, "5", " 5 ", 1.0), (exact_match, "5", "6", 0.0), (exact_match, "Paris", "paris", 0.0),
    (quasi_exact_match, "The Cat!", "cat", 1.0), (quasi_exact_match, "an apple", "apples", 0.0),
    (prefix_exact_match, "Paris", "Paris, France", 1.0), (prefix_exact_match, "Paris", "It is Paris", 0.0),
    (quasi_prefix_exact_match, "The Paris", "paris, is it", 1.0),
    # gold words {cat, sat}, predicted {cat, sat, down}: 2 * 2 / (2 + 3)
    (f1_score, "the cat sat", "a cat sat down", 0.8), (f1_score, "yes", "no", 0.0),
    # LCS 5 of 6 reference and 5 predicted words: P = 1, R = 5/6, F = 10/11
    (rouge_l, GOLD, "the cat on the mat", 10 / 11),
    # every predicted word is in the reference (clipped counts): p1 = 1; 5 < 6 words: BP = exp(1 - 6/5)
    (bleu_1, GOLD, "the cat on the mat", math.exp(-0.2)),
    # 7 predicted words, 3 of their 4 four-grams in the reference; longer than it: BP = 1
    (bleu_4, GOLD, GOLD + " today", 0.75), (bleu_1, GOLD, GOLD + " today", 6 / 7), (bleu_4, GOLD, "the cat on the mat", 0.0),
    (final_number_exact_match, "The answer is 1,234.", "so it is 1234", 1.0), (final_number_exact_match, "-5", "it is -5", 1.0),
    (final_number_exact_match, "12", "12.5", 0.0),
])
def test_metric_against_a_hand_computed_value(fn, gold, pred, want):
    assert fn(gold, pred) == pytest.approx(want, abs=1e-9)


@pytest.mark.parametrize("answer", ["B", "(B)", "b.", "B) Paris", " B", "**B**", "Answer: B"])
def test_multiple_choice_letter_is_mapped_back(answer):
    assert parse_choice_letter(answer, 4) == "B"
    opts = ("Rome", "Paris", "Madrid", "Oslo")
    inst = Instance(input="Capital of France?", references=tuple(Reference(output=o, tags=(CORRECT_TAG,) if o == "Paris" else ())
                                                                  for o in opts))
    state = RequestState(instance=inst, prompt=Prompt.user("q"), output_mapping=dict(zip("ABCD", opts)),
                         result=(LLMResponse(model_id="m", completion=answer),))
    assert mapped_output(state) == "Paris"


@pytest.mark.parametrize("answer", ["A cat sat on the mat", "E", "I think so", ""])
def test_no_letter_or_a_letter_beyond_the_options_is_unparseable(answer):
    assert parse_choice_letter(answer, 4) is None
