"""The roles' pure parts: judge reply parsing, expected score, proposal parsing, dedup, category allocation, seeds."""
import json
import math

import pytest

from unicorn.engine.logprobs import TokenLogprob
from unicorn.engine.outputs import TextSample
from unicorn.selfplay.judge import expected_score, parse_judgement
from unicorn.selfplay.proposer import PromptPool, allocate_categories, parse_proposal
from unicorn.selfplay.recipe import load_recipe
from unicorn.selfplay.solver import solver_params


@pytest.mark.parametrize("text, score, form", [
    ("colours right, shapes wrong.\nScore: 4", 4, "score_line"),
    ("Score: 3\nthen more thought\nScore: 10", 10, "score_line"),
    ("I'd say score = 7/10.", 7, "score_line"),
    ('{"analysis": "the count is off", "score": 2}', 2, "json"),
    ('Thinking... {"analysis": "fine", "score": "9"} done', 9, "json"),
    ('{"analysis": "x", "score": 8.0}', 8, "json"),
    ('{"analysis": "raw \x08 control", "score": 6}', 6, "json"),  # a constrained random model writes these
    ('{"analysis": "x", "score": 11}', None, None),
    ("Score: 12", None, None),
    ("no score here", None, None),
    ('{"analysis": "unterminated", "score": 5', None, None),
    ("", None, None),
    (None, None, None),
])
def test_parse_judgement(text, score, form):
    verdict = parse_judgement(text)
    assert (verdict.score, verdict.form) == (score, form)


def test_parse_judgement_keeps_the_analysis():
    assert parse_judgement("count wrong, objects right.\nScore: 3").analysis == "count wrong, objects right."
    assert parse_judgement('{"analysis": "two cats, not three", "score": 1}').analysis == "two cats, not three"


def test_expected_score_reads_the_score_token():
    pieces = {0: "quality right.\n", 1: "Score", 2: ":", 3: " 10", 4: " 7", 5: " x"}
    lp = [TokenLogprob(0, 0.0), TokenLogprob(1, 0.0), TokenLogprob(2, 0.0),
          TokenLogprob(3, math.log(0.5), {3: math.log(0.5), 4: math.log(0.3), 5: math.log(0.2)})]
    sample = TextSample("quality right.\nScore: 10", [0, 1, 2, 3], "stop", logprobs=lp)
    verdict = parse_judgement(sample.text)
    value = expected_score(sample, verdict, pieces.__getitem__)
    assert value == round((10 * 0.5 + 7 * 0.3) / 0.8, 4)
    assert expected_score(TextSample(sample.text, [0, 1, 2, 3], "stop"), verdict, pieces.__getitem__) is None


def test_parse_proposal():
    assert parse_proposal(" A red circle.\nextra", "text") == "A red circle."
    assert parse_proposal('Sure: {"prompt": "Two cats on a mat"}', "json") == "Two cats on a mat"
    assert parse_proposal('"A quoted prompt"', "json") == "A quoted prompt"
    assert parse_proposal("   \n ", "text") is None


def test_prompt_pool_exact_and_near_duplicates():
    pool = PromptPool(near=0.8)
    pool.add("counting", "Exactly four red apples in a white bowl.")
    assert pool.duplicate("counting", "exactly four red apples in a white bowl") == "exact"
    assert pool.duplicate("spatial", "Exactly four red apples, in a white bowl!") == "exact"  # exact: any category
    assert pool.duplicate("counting", "Exactly four red apples in a white bowls") == "near"
    assert pool.duplicate("spatial", "Exactly four red apples in a white bowls") is None  # near: same category only
    assert pool.duplicate("counting", "A lighthouse far away with a boat") is None
    assert PromptPool(near=None).duplicate("counting", "anything") is None


def test_allocation_follows_the_shares_on_every_prefix():
    recipe = load_recipe("unicorn-official")
    assigned: dict = {}
    active = list(recipe.categories)
    slots = []
    for epoch in range(10):
        slots += allocate_categories(recipe, 0, epoch, epoch * 20, 20, assigned, active)
    for c, cat in recipe.categories.items():
        assert abs(slots.count(c) - cat.share * 200) <= 1, c
    again = allocate_categories(recipe, 0, 3, 60, 20, {}, active)
    assert again != allocate_categories(recipe, 1, 3, 60, 20, {}, active)  # shuffled by the run seed


def test_solver_one_request_per_prompt_seeds_independent_of_anything_but_ids():
    recipe = load_recipe("toyworld")
    p = solver_params(recipe, 5, 17)
    assert p.n == 8 and p.cfg_scale[0] == 3.0 and p.cfg_scale[-1] == 8.0
    assert len(set(p.seed)) == 8 and p.seed == solver_params(recipe, 5, 17).seed
    assert p.seed != solver_params(recipe, 5, 18).seed and p.seed != solver_params(recipe, 6, 17).seed


def test_solver_passes_the_recipes_flow_settings_and_a_constrained_judge_its_schema():
    from unicorn.selfplay.judge import judge_params

    official = load_recipe("unicorn-official")
    p = solver_params(official, 0, 0)
    assert (p.height, p.width, p.num_timesteps, p.timestep_shift) == (1024, 1024, 50, 3.0)
    assert (p.cfg_interval, p.cfg_renorm_min, p.cfg_img_scale) == ((0.0, 1.0), 0.0, 1.0)
    assert judge_params(official, 0, 0, 0).json_schema is None
    constrained = load_recipe("unicorn-official", {"judge": {"constrained": True, "analysis_max_chars": 12}})
    schema = json.loads(judge_params(constrained, 0, 0, 0).json_schema)
    assert list(schema["properties"]) == ["analysis", "score"]  # reasoning first
    assert schema["properties"]["analysis"]["maxLength"] == 12 and schema["properties"]["score"]["maximum"] == 10
