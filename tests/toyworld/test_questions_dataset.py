"""UniCycle questions and grading; dataset generation."""
import json
import random

import numpy as np
from PIL import Image

from unicorn.toyworld import CATEGORIES, Question, make_questions
from unicorn.toyworld.dataset import generate, load, make_example
from unicorn.toyworld.questions import QUESTION_TYPES, grade_answer
from unicorn.toyworld.sampler import sample_scene


def test_questions_follow_the_schema():
    rng = random.Random(0)
    seen_types = set()
    for category in CATEGORIES:
        for _ in range(20):
            questions = make_questions(sample_scene(category, rng), rng)
            assert questions, category
            assert len({q.id for q in questions}) == len(questions)
            for q in questions:
                d = q.to_dict()
                assert {"id", "type", "question", "options", "answer", "keywords"} <= set(d)
                assert Question.from_dict(json.loads(json.dumps(d))) == q
                assert q.type in QUESTION_TYPES
                seen_types.add(q.type)
    assert seen_types == set(QUESTION_TYPES)


def test_grading():
    yesno = Question("q0", "yesno", "Is there a red circle?", "yes", ["yes", "no"])
    assert grade_answer(yesno, " Yes.") == 1.0 and grade_answer(yesno, "no") == 0.0
    text = Question("q1", "text", "What letters?", "CAT", keywords=["CAT"])
    assert grade_answer(text, "It says 'cat'.") == 1.0 and grade_answer(text, "CAR") == 0.0


def test_dataset_is_deterministic_and_loads(tmp_path):
    a = generate(tmp_path / "a", num_per_category=2, seed=3)
    b = generate(tmp_path / "b", num_per_category=2, seed=3)
    assert a.read_text() == b.read_text()
    examples = load(a)
    assert len(examples) == 2 * len(CATEGORIES)
    for ex in examples:
        pixels = np.asarray(Image.open(a.parent / ex.image))
        assert pixels.shape == (64, 64, 3)
        assert np.array_equal(pixels, np.asarray(Image.open(b.parent / ex.image)))
    assert not list(tmp_path.rglob("*.tmp*"))
    # example i does not depend on how many were asked for
    first, _ = make_example(CATEGORIES[0], 0, seed=3)
    assert first.to_dict() == examples[0].to_dict()
