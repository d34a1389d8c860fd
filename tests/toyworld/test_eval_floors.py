"""The eval's floors and judge statistics: hand-checked cases, and each floor measured as what it claims to be."""
import math

import numpy as np
import pytest
import torch

from unicorn.toyworld.model.data import make_item
from unicorn.toyworld.model.floors import BlindAnswerer, drawing_floors, mean_se
from unicorn.toyworld.model.judge_stats import Drawing, judge_ranking
from unicorn.toyworld.questions import grade_answer
from unicorn.toyworld.scene import CATEGORIES


def group(oracle, judge, expected=None):
    expected = expected or [None] * len(oracle)
    return [Drawing(o, j, e) for o, j, e in zip(oracle, judge, expected)]


def test_judge_ranking_by_hand():
    g = group([2, 8, 5], [3, 9, 3])  # pairs (2,8) right, (2,5) tie, (8,5) right
    stats = judge_ranking([g])
    assert stats["pairs"] == 3 and stats["pair_accuracy"] == pytest.approx(2.5 / 3)
    assert stats["tie_rate"] == pytest.approx(1 / 3) and stats["top_rate"] == 0.0
    assert stats["pick_gain"] == pytest.approx(8 - 5) and stats["oracle_gain"] == pytest.approx(3)
    assert stats["gain_share"] == pytest.approx(1.0)
    # The expected score breaks the (2, 5) tie the right way; it never overrides different integer scores.
    broken = judge_ranking([group([2, 8, 5], [3, 9, 3], [3.4, 8.6, 3.5])], tie_break=True)
    assert broken["pair_accuracy"] == pytest.approx(1.0) and broken["tie_rate"] == 0.0


def test_trivial_judges_sit_at_their_floors():
    rng = np.random.default_rng(0)
    groups_oracle = [list(rng.integers(0, 11, size=8)) for _ in range(50)]
    constant = judge_ranking([group(o, [10] * 8) for o in groups_oracle])
    assert constant["pair_accuracy"] == pytest.approx(0.5) and constant["tie_rate"] == 1.0
    assert constant["top_rate"] == 1.0
    oracle = judge_ranking([group(o, o) for o in groups_oracle])
    assert oracle["pair_accuracy"] == 1.0 and oracle["gain_share"] == pytest.approx(1.0)
    reverse = judge_ranking([group(o, [10 - x for x in o]) for o in groups_oracle])
    assert reverse["pair_accuracy"] == 0.0 and reverse["pick_gain"] < 0
    unparsed = judge_ranking([group(o, [None] * 8) for o in groups_oracle])
    assert unparsed["pair_accuracy"] == pytest.approx(0.5) and unparsed["parse_rate"] == 0.0


class IdentityCodec:
    """A perfect codec: its round trip returns the image (to check that the codec floor is the ceiling)."""

    def encode(self, pixels):
        return pixels

    def decode(self, ids):
        return ids


def test_drawing_floors_are_ordered_and_a_perfect_codec_is_the_ceiling():
    items = [make_item(c, i, 11, "val") for c in CATEGORIES for i in range(3)]
    rows = drawing_floors(items, IdentityCodec())
    mean = {name: (np.mean([r["score"] for r in rs]), np.mean([r["soft"] for r in rs])) for name, rs in rows.items()}
    assert mean["codec"] == (10.0, 1.0)
    assert mean["blank"][0] < mean["other_scene"][0] < mean["codec"][0]
    assert max(r["score"] for r in rows["blank"]) <= 4  # the oracle's quality rule
    assert mean["background"][1] < 1.0 and mean["other_scene"][1] < 1.0
    with pytest.raises(ValueError, match="other-scene floor"):
        drawing_floors(items[:1], IdentityCodec())


def test_the_blind_answerer_uses_the_question_only_and_beats_a_fixed_answer():
    from unicorn.toyworld.roles import question_text

    fit = [make_item(c, i, 0, "train") for c in CATEGORIES for i in range(40)]
    test = [make_item(c, i, 0, "test") for c in CATEGORIES for i in range(20)]
    blind = BlindAnswerer().fit((question_text(q), q) for it in fit for q in it.questions)
    scored = [(grade_answer(q, blind.answer(question_text(q), q)), grade_answer(q, q.options[0] if q.options else "1"))
              for it in test for q in it.questions]
    blind_acc, fixed_acc = np.mean([s for s, _ in scored]), np.mean([f for _, f in scored])
    assert blind_acc > fixed_acc  # it learned the prompt-implied answers' regularities, from text alone
    assert blind.answer("What colour is the never-seen?", fit[0].questions[0]) in fit[0].questions[0].options + ["yes", "no"]


def test_mean_se():
    assert mean_se([1.0, 2.0, 3.0]) == pytest.approx((2.0, 1.0 / math.sqrt(3)))
    assert mean_se([4.0]) == (4.0, 0.0)
