"""Recipes as data: the shipped recipes load, the toyworld recipe renders exactly what the toy model was trained
with, and a malformed recipe is refused with one line naming the file and the field."""
import json
import shutil

import pytest

from unicorn.selfplay.recipe import RecipeError, builtin_dir, builtin_recipes, load_recipe


def test_shipped_recipes_load():
    assert {"toyworld", "unicorn-official"} <= set(builtin_recipes())
    official = load_recipe("unicorn-official")
    assert len(official.categories) == 10 and len(official.rubrics) == 9
    assert official.categories["general_object"].rubric == "relational"
    assert official.categories["general_object"].share == 0.24 and official.categories["counting"].share == 0.03
    t = official.thresholds
    assert (t.keep_min_best, t.reflection_min_best, t.reflection_min_gap) == (7, 9, 3)
    assert official.solver.rollouts == 8 and official.solver.cfg_scales()[0] == 3.0
    assert official.solver.cfg_scales()[-1] == 8.0
    assert official.proposer.temperature == 0.8 and official.judge.temperature == 0.0
    # the 5k run's mix: 5,000 T2I, 5,000 caption, 3,000 judgement, 1,000 reflection
    assert {k: v * 5000 for k, v in official.mix.items()} == {"t2i": 5000, "caption": 5000, "judgement": 3000,
                                                              "reflection": 1000}
    for category in official.categories:  # every template renders
        assert category in official.render_judge(category, "a red fox")
        official.render_proposer(category, list(official.categories[category].seeds))


def test_toyworld_recipe_renders_what_the_toy_model_was_trained_with():
    """The recipe and the trainer's formats cannot drift: same words, same chat prompt, same judge request."""
    from PIL import Image

    from unicorn.models.janus_chat import understanding_prompt
    from unicorn.selfplay.judge import judge_request
    from unicorn.selfplay.proposer import proposer_request
    from unicorn.toyworld import roles
    from unicorn.toyworld.model import evaluate
    from unicorn.toyworld.rubrics import RUBRICS, rubric_text
    from unicorn.toyworld.scene import CATEGORIES
    from unicorn.training import formats

    recipe = load_recipe("toyworld")
    assert tuple(recipe.categories) == CATEGORIES and set(recipe.rubrics) == set(RUBRICS)
    image = Image.new("RGB", (64, 64), (10, 20, 30))
    prompt = "Exactly two cyan triangles."
    for category in CATEGORIES:
        assert recipe.render_rubric(category) == rubric_text(category)
        assert recipe.render_proposer(category, []) == roles.propose_instruction(category)
        request = proposer_request(recipe, category, [])
        assert understanding_prompt(request["messages"], 64) == formats.text_prompt(roles.propose_instruction(category))
        assert judge_request(recipe, category, prompt, image) == evaluate.judge_request(prompt, image)
        assert recipe.render_judge(category, prompt) == formats.JUDGE_INSTRUCTION.format(prompt=prompt)
        assert recipe.render_caption(category) == formats.CAPTION_INSTRUCTION
        assert recipe.render_reflection(category, prompt) == formats.REFLECTION_INSTRUCTION.format(prompt=prompt)
        assert recipe.render_solver(category, prompt) == prompt
        assert recipe.render_rate_prompt(category, prompt) == roles.rate_instruction(category, prompt)


def test_toyworld_rule_checks_accept_the_worlds_own_prompts():
    """Every prompt the world writes for a category passes that category's checks (and fails another's)."""
    import random

    from unicorn.selfplay.proposer import rule_violation
    from unicorn.toyworld.prompts import make_prompt
    from unicorn.toyworld.sampler import sample_scene

    recipe = load_recipe("toyworld")
    rng = random.Random(0)
    for category, c in recipe.categories.items():
        for _ in range(40):
            prompt = make_prompt(sample_scene(category, rng, "train"), rng)
            assert rule_violation(prompt, c.checks) is None, (category, prompt)
    assert rule_violation("A red circle.", recipe.categories["counting"].checks) == "names no count"
    assert rule_violation("Seven red circles.", recipe.categories["counting"].checks) == "count 7 above 6"


def _copy(tmp_path, name="toyworld"):
    dst = tmp_path / name
    shutil.copytree(builtin_dir() / name, dst)
    return dst


def _edit(path, fn):
    data = json.loads(path.read_text())
    fn(data)
    path.write_text(json.dumps(data))


def _refused(root, *needles):
    with pytest.raises(RecipeError) as err:
        load_recipe(root)
    message = str(err.value)
    assert "\n" not in message
    for needle in needles:
        assert needle in message, message
    return message


def test_missing_file(tmp_path):
    root = _copy(tmp_path)
    (root / "rubrics.json").unlink()
    _refused(root, "rubrics.json", "missing")


def test_bad_json(tmp_path):
    root = _copy(tmp_path)
    (root / "templates.json").write_text('{"proposer": "x",, }')
    _refused(root, "templates.json", "not valid JSON", "line 1")


def test_unknown_category_in_shares(tmp_path):
    root = _copy(tmp_path)
    _edit(root / "categories.json", lambda d: d["shares"].update(living=0.0001))
    _refused(root, "categories.json", "'shares.living'", "unknown category")


def test_shares_not_summing_to_one(tmp_path):
    root = _copy(tmp_path)
    _edit(root / "categories.json", lambda d: d["shares"].update(counting=0.5))
    _refused(root, "categories.json", "'shares'", "sum to 1")


def test_missing_share(tmp_path):
    root = _copy(tmp_path)
    _edit(root / "categories.json", lambda d: d["shares"].pop("text"))
    _refused(root, "categories.json", "'shares.text'", "missing")


def test_missing_template_placeholder(tmp_path):
    root = _copy(tmp_path)
    _edit(root / "templates.json", lambda d: d.update(judge="Judge the image. End with Score: N."))
    _refused(root, "templates.json", "'judge'", "missing placeholder {prompt}")


def test_unknown_template_placeholder(tmp_path):
    root = _copy(tmp_path)
    _edit(root / "templates.json", lambda d: d.update(proposer="Propose a {category} prompt about {topic}."))
    _refused(root, "templates.json", "'proposer'", "unknown placeholder {topic}")


def test_bands_must_cover_every_score(tmp_path):
    root = _copy(tmp_path)
    _edit(root / "rubrics.json", lambda d: d["default_bands"].pop())
    _refused(root, "rubrics.json", "'default_bands'", "missing [0, 1, 2, 3]")


def test_unknown_rubric_and_check(tmp_path):
    root = _copy(tmp_path)
    _edit(root / "categories.json", lambda d: d["categories"]["text"].update(rubric="nope"))
    _refused(root, "categories.json", "'categories.text.rubric'", "unknown rubric")
    root = _copy(tmp_path / "b")
    _edit(root / "categories.json", lambda d: d["categories"]["text"]["checks"].update(max_letters=3))
    _refused(root, "'categories.text.checks.max_letters'", "unknown check")


def test_bad_setting_type(tmp_path):
    root = _copy(tmp_path)
    _edit(root / "recipe.json", lambda d: d["judge"].update(max_tokens="many"))
    _refused(root, "recipe.json", "'judge.max_tokens'")


def test_unknown_recipe_name():
    with pytest.raises(RecipeError, match="neither a directory nor a shipped recipe"):
        load_recipe("no-such-recipe")


def test_settings_over_the_recipe_are_kept_in_its_files_and_digest():
    base = load_recipe("unicorn-official")
    small = load_recipe("unicorn-official", {"solver": {"height": 32, "width": 32}, "judge": {"max_tokens": 24}})
    assert (small.solver.height, small.solver.width, small.judge.max_tokens) == (32, 32, 24)
    assert small.solver.num_timesteps == base.solver.num_timesteps == 50  # the rest as written
    assert small.digest != base.digest
    assert base.files["recipe.json"] == (builtin_dir() / "unicorn-official" / "recipe.json").read_bytes()
    saved = json.loads(small.files["recipe.json"])  # what a run keeps in its recipe copy
    assert saved["solver"]["height"] == 32 and saved["judge"]["max_tokens"] == 24
    with pytest.raises(RecipeError, match="recipe.json: field 'solver.height': must be null or an integer >= 1"):
        load_recipe("unicorn-official", {"solver": {"height": 0}})
    with pytest.raises(RecipeError, match="unknown section 'sovler'"):
        load_recipe("unicorn-official", {"sovler": {"height": 32}})


def test_bad_flow_and_judge_settings(tmp_path):
    root = _copy(tmp_path)
    _edit(root / "recipe.json", lambda d: d["solver"].update(cfg_interval=[0.5, 0.2]))
    _refused(root, "recipe.json", "'solver.cfg_interval'", "low <= high")
    root = _copy(tmp_path / "b")
    _edit(root / "recipe.json", lambda d: d["judge"].update(constrained=True))  # toyworld's judge replies Score: N
    _refused(root, "recipe.json", "'judge.constrained'", "needs judge.reply")
