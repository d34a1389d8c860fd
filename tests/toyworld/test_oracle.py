"""The oracle scores clean renders 10, survives generator-like noise, and catches deliberate errors."""
import random

import numpy as np
import pytest

from unicorn.toyworld import CATEGORIES, make_questions
from unicorn.toyworld.corrupt import KEY_MUTATIONS, add_noise, blur, colour_drift, degrade, mutate, shift
from unicorn.toyworld.oracle import ALL_OR_NOTHING, RUBRICS, judge
from unicorn.toyworld.questions import grade_answer
from unicorn.toyworld.render import render_array
from unicorn.toyworld.sampler import sample_scene

NUM_SCENES = 50
KEY_CRITERION = {"colour": "colours", "shape": "shapes", "count": "count", "relation": "relations", "text": "spelling",
                 "style": "style", "background": "background", "implied": "implied", "forbidden": "negation"}


def scenes(category, n=NUM_SCENES, seed=0):
    rng = random.Random(f"{seed}:{category}")
    return [(s, make_questions(s, rng)) for s in (sample_scene(category, rng) for _ in range(n))]


@pytest.mark.parametrize("category", CATEGORIES)
def test_clean_renders_score_ten_and_answer_every_question(category):
    for scene, questions in scenes(category):
        report = judge(scene, render_array(scene), questions)
        assert report.score == 10, (scene, report)
        for q in questions:
            assert grade_answer(q, report.answers[q.id]) == 1.0, (q, report.answers[q.id])


@pytest.mark.parametrize("category", CATEGORIES)
def test_degraded_renders_still_score_high(category):
    noise = np.random.default_rng(0)
    scores, answers = [], []
    for scene, questions in scenes(category, n=30, seed=1):
        report = judge(scene, degrade(render_array(scene), noise), questions)
        scores.append(report.score)
        answers += [grade_answer(q, report.answers[q.id]) for q in questions]
    # Known miss: a large yellow outline circle on black, blurred, splits into two blobs (1 of 300 style scenes).
    assert sum(s < 8 for s in scores) <= 1 and np.mean(scores) >= 9.5, scores
    assert np.mean(answers) >= 0.95


@pytest.mark.parametrize("perturb", [
    lambda x, g: add_noise(x, 20.0, g),
    lambda x, g: blur(x, 0.8),
    lambda x, g: shift(x, 2, -2),
    lambda x, g: colour_drift(x, (15.0, -15.0, 10.0)),
], ids=["noise20", "blur0.8", "shift", "drift"])
def test_each_degradation_alone_is_harmless(perturb):
    # Known misses under blur 0.8 at 64 px: 2-px letters lose a letter, small diamonds on black lose their corners,
    # outlines split. Measured over 360 scenes: 2 below 9 (6 with the samplers before the splits); here 5 of 180.
    noise = np.random.default_rng(2)
    scores = [judge(scene, perturb(render_array(scene), noise)).score
              for category in CATEGORIES for scene, _ in scenes(category, n=20, seed=2)]
    assert np.mean(scores) >= 9.8 and sum(s < 9 for s in scores) <= 0.03 * len(scores), scores


@pytest.mark.parametrize("category", CATEGORIES)
def test_deliberate_errors_fail_their_criterion_and_the_bar(category):
    rng = random.Random(3)
    for scene, _ in scenes(category, n=30, seed=3):
        for kind in KEY_MUTATIONS[category]:
            wrong = mutate(scene, kind, rng)
            report = judge(scene, render_array(wrong))
            assert report.score <= 7, (kind, scene, report)
            assert report.criteria[KEY_CRITERION[kind]] < 1.0, (kind, report.criteria)


def test_other_mutations_are_caught_where_they_apply():
    rng = random.Random(4)
    for scene, _ in scenes("attribute", n=30, seed=4):
        wrong = judge(scene, render_array(mutate(scene, "size", rng)))
        assert wrong.criteria["sizes"] < 1.0 and wrong.score <= 9
    for scene, _ in scenes("text", n=20, seed=4):
        assert judge(scene, render_array(mutate(scene, "background", rng))).criteria["background"] == 0.0


def test_blank_and_noise_images_score_low():
    for category in CATEGORIES:
        for scene, _ in scenes(category, n=5, seed=5):
            blank = np.full((64, 64, 3), 255, np.uint8)
            assert judge(scene, blank).score <= 4, category
            static = np.random.default_rng(0).integers(0, 256, (64, 64, 3), dtype=np.uint8)
            assert judge(scene, static).score <= 4, category


def test_rubrics_split_ten_points():
    assert set(RUBRICS) == set(CATEGORIES)
    for rubric in RUBRICS.values():
        assert sum(rubric.values()) == 10
    assert ALL_OR_NOTHING <= {c for r in RUBRICS.values() for c in r} | {"sizes"}


def test_oracle_accepts_pil_and_float_arrays():
    scene, _ = scenes("counting", n=1)[0]
    arr = render_array(scene)
    from PIL import Image
    assert judge(scene, Image.fromarray(arr)).score == 10
    assert judge(scene, arr.astype(np.float32) / 255).score == 10


def test_style_answer_on_a_tie_does_not_depend_on_the_hash_seed():
    """A filled and an outlined blob: the answer is "outline" in every process (max over a set of str followed the
    per-process hash seed, and two rebuilds of the toy model's data disagreed on two answers)."""
    import os
    import subprocess
    import sys

    code = ("from types import SimpleNamespace as N; from unicorn.toyworld.oracle import answer; "
            "print(answer({'kind': 'style'}, N(blobs=[N(style='filled'), N(style='outline')])))")
    answers = {subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True,
                              env={**os.environ, "PYTHONHASHSEED": str(seed)}).stdout.strip() for seed in range(6)}
    assert answers == {"outline"}
