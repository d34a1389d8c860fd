"""Rejection sampling by rule on synthetic rollouts (no model): thresholds, seeded tie-breaks, the mix."""
from unicorn.selfplay.cpr_builder import build_records, select
from unicorn.selfplay.recipe import load_recipe


def _rollouts(pid, scores):
    return [{"prompt_id": pid, "rollout": i, "image": f"images/p{pid}-r{i}.png", "vq_codes": [1, 2, 3], "seed": 100 + i,
             "cfg_scale": 3.0, "temperature": 1.0, "score": s, "analysis": f"a{i}", "judge_raw": f"a{i}\nScore: {s}",
             "expected_score": None} for i, s in enumerate(scores)]


def test_select_applies_the_official_thresholds():
    recipe = load_recipe("toyworld")
    s = select(recipe, 0, 1, "counting", "p", _rollouts(1, [6, 6, 6]))
    assert not s.kept and not s.reflection
    s = select(recipe, 0, 1, "counting", "p", _rollouts(1, [7, 2, None]))
    assert s.kept and not s.reflection and s.best["score"] == 7 and s.worst["score"] == 2 and len(s.judged) == 2
    assert select(recipe, 0, 1, "counting", "p", _rollouts(1, [9, 6])).reflection  # best 9, gap 3
    assert not select(recipe, 0, 1, "counting", "p", _rollouts(1, [9, 7])).reflection  # gap 2
    assert not select(recipe, 0, 1, "counting", "p", _rollouts(1, [8, 0])).reflection  # best below 9
    s = select(recipe, 0, 1, "counting", "p", _rollouts(1, [None, None]))
    assert s.best is None and not s.kept


def test_ties_are_broken_by_seed_not_by_position():
    recipe = load_recipe("toyworld")
    picks = {select(recipe, seed, 3, "counting", "p", _rollouts(3, [10] * 8)).best["rollout"] for seed in range(20)}
    assert len(picks) > 1
    assert select(recipe, 5, 3, "counting", "p", _rollouts(3, [10] * 8)).best is not None
    a = select(recipe, 5, 3, "counting", "p", _rollouts(3, [10] * 8)).best["rollout"]
    assert a == select(recipe, 5, 3, "counting", "p", _rollouts(3, [10] * 8)).best["rollout"]


def test_mix_quotas_per_kept_prompt():
    recipe = load_recipe("toyworld")  # t2i 1.0, caption 1.0, judgement 0.6, reflection 0.2
    selections = [select(recipe, 0, pid, "counting", f"prompt {pid}", _rollouts(pid, [10, 1] if pid % 2 else [3, 3]))
                  for pid in range(20)]
    records, candidates = build_records(recipe, 0, selections, 20)
    kinds = [r.kind for r in records]
    assert candidates == {"t2i": 10, "caption": 10, "judgement": 40, "reflection": 10}
    assert kinds.count("t2i") == 10 and kinds.count("caption") == 10
    assert kinds.count("judgement") == 6 and kinds.count("reflection") == 2
    t2i = [r for r in records if r.kind == "t2i"]
    assert all(r.score == 10 and r.image.vq_codes == (1, 2, 3) for r in t2i)
    ref = [r for r in records if r.kind == "reflection"]
    assert all(r.winner_score == 10 and r.loser_score == 1 and r.loser_image.vq_codes is None for r in ref)
    jud = [r for r in records if r.kind == "judgement"][0]
    assert jud.instruction == recipe.render_judge("counting", jud.prompt) and jud.reasoning.startswith("a")
    for r in records:
        r.validate()
