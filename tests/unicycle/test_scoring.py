"""Soft, Hard, keyword fractions and the rule judge on hand-worked cases."""
import pytest

from unicorn.unicycle.judges import chosen_option, rule_verdict, yes_no
from unicorn.unicycle.schema import Question
from unicorn.unicycle.scoring import hard, keyword_fraction, normalise, soft, summarise


def test_normalise_case_punctuation_whitespace():
    assert normalise("  The RED,car!\t is\n\nhere_now ") == "the red car is here now"
    assert normalise("Straße") == "strasse"  # case folding, not just lower()


def test_keyword_fraction_by_hand():
    # keywords: "red car" (found as words), "tea" (found), "cake" (not: "cakes" is another word), "!!" (no letters)
    assert keyword_fraction(["red car", "tea", "cake", "!!"], "A Red, car... and TEA; cakes") == pytest.approx(2 / 4)
    assert keyword_fraction(["car"], "a cart") == 0.0
    assert keyword_fraction(["OK"], " ok.") == 1.0
    with pytest.raises(ValueError):
        keyword_fraction([], "x")


def test_soft_and_hard_by_hand():
    # prompt A: s = 1, 1, 0.5 -> Soft 2.5/3, Hard 0; prompt B: 1, 1 -> Soft 1, Hard 1;
    # prompt C: 0, None (unparsed) -> Soft 0, Hard 0; prompt D: 1, None -> Soft 0.5, Hard 0
    rows = [("color", [1.0, 1.0, 0.5]), ("color", [1.0, 1.0]), ("text", [0.0, None]), ("text", [1.0, None])]
    assert soft(rows[0][1]) == pytest.approx(2.5 / 3) and hard(rows[0][1]) == 0.0
    assert soft(rows[1][1]) == 1.0 and hard(rows[1][1]) == 1.0
    assert soft(rows[3][1]) == 0.5 and hard(rows[3][1]) == 0.0
    s = summarise(rows)
    assert s["overall"]["soft"] == pytest.approx(100 * (2.5 / 3 + 1 + 0 + 0.5) / 4, abs=1e-4)
    assert s["overall"]["hard"] == 25.0
    assert s["overall"]["unparsed"] == 2 and s["overall"]["questions"] == 9 and s["overall"]["prompts"] == 4
    assert s["categories"]["color"]["soft"] == pytest.approx(100 * (2.5 / 3 + 1) / 2, abs=1e-4)
    assert s["categories"]["color"]["hard"] == 50.0
    assert s["categories"]["text"] == {"soft": 25.0, "hard": 0.0, "prompts": 2, "questions": 4, "unparsed": 2}
    assert list(s["categories"]) == ["color", "text"]


@pytest.mark.parametrize("answer,expected", [
    ("yes", "yes"), (" Yes.", "yes"), ("YEAH, there is", "yes"), ("y", "yes"), ("yep", "yes"),
    ("No", "no"), ("nope!", "no"), ("There is no circle", "no"), ("n", "no"), ("blue", None), ("", None),
])
def test_yes_no_variants(answer, expected):
    assert yes_no(answer) == expected


OPTIONS = ["red", "dark blue", "blue", "green"]


@pytest.mark.parametrize("answer,expected", [
    ("B", "dark blue"), ("(c)", "blue"), ("c)", "blue"), ("D.", "green"), ("option A", "red"), ("Answer: b", "dark blue"),
    ("blue", "blue"), ("Dark Blue!", "dark blue"), ("it is dark blue", "dark blue"),  # "blue" gives way to "dark blue"
    ("it is green", "green"), ("a red circle", "red"),  # "a" before a word is an article, not option A
    ("E", None), ("red or green", None), ("purple", None),
])
def test_option_letter_and_text(answer, expected):
    assert chosen_option(answer, OPTIONS) == expected


def test_rule_verdicts_per_type():
    mc = Question("q0", "mc", "Colour?", "blue", tuple(OPTIONS))
    assert rule_verdict(mc, "C").score == 1.0 and rule_verdict(mc, "B").score == 0.0
    assert rule_verdict(mc, "purple").reply == "no option named"
    yn = Question("q1", "yesno", "Is it?", "no")
    assert rule_verdict(yn, "Nope").score == 1.0 and rule_verdict(yn, "yes").score == 0.0
    op = Question("q2", "open", "How many?", "3")
    assert rule_verdict(op, "three").score == 1.0 and rule_verdict(op, " 3.").score == 1.0
    assert rule_verdict(op, "4").score == 0.0 and rule_verdict(op, "").score == 0.0
    tx = Question("q3", "text", "Which words?", "drink tea", keywords=("drink", "tea", "cake"))
    assert rule_verdict(tx, "DRINK tea").score == pytest.approx(2 / 3)


def test_toyworld_grader_is_the_worlds():
    from unicorn.toyworld.questions import Question as WorldQuestion, grade_answer

    q = Question("q0", "open", "How many red circles are there?", "2", grader="toyworld")
    for answer in ("2", " 2", "two", "2 circles"):
        assert rule_verdict(q, answer).score == grade_answer(WorldQuestion("q0", "open", q.question, "2"), answer)
