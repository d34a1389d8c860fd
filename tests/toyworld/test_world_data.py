"""The oracle-labelled pretraining data: each judged image carries one question conversation whose answers are what
the oracle reads in that image, and the VQ work is batched and deduplicated without changing any code."""
import numpy as np
import PIL.Image
import pytest
import torch

from unicorn.cpr.schema import read_records
from unicorn.models.vq import VQModel
from unicorn.toyworld.model.data import (
    LOSER_VARIANTS, WorldDataConfig, build_world_dataset, make_item, mixed_codes, vq_codes, vq_decode, vq_roundtrip,
)
from unicorn.toyworld.oracle import judge
from unicorn.toyworld.pretrain import ModelArch
from unicorn.toyworld.roles import question_text, rate_response


def _random_vq() -> VQModel:
    torch.manual_seed(0)
    arch = ModelArch()
    return VQModel(arch.vq_arch(), grid=arch.grid).eval()


def test_vq_codes_deduplicate_identical_images_to_the_same_codes():
    vq = _random_vq()
    items = [make_item("counting", i, 0, "train") for i in range(3)]
    rgbs = [items[0].rgb, items[1].rgb, items[0].rgb.copy(), items[2].rgb, items[1].rgb]
    codes = vq_codes(vq, rgbs, batch_size=2)
    # the distinct images, encoded in the same batches (a random codec has near ties that another batch composition
    # can round the other way, so the reference keeps the batches)
    unique = vq_codes(vq, [rgbs[0], rgbs[1], rgbs[3]], batch_size=2)
    assert codes == [unique[0], unique[1], unique[0], unique[2], unique[1]]
    recon, rt_codes = vq_roundtrip(vq, rgbs)
    assert rt_codes == codes and all(r.shape == (64, 64, 3) and r.dtype == np.uint8 for r in recon)


@pytest.fixture(scope="module")
def world_data(tmp_path_factory):
    cfg = WorldDataConfig(scenes_per_category=4, judged_per_scene=3, questions_per_image=8, rate_fraction=0.6,
                          reflection_fraction=0.6, seed=0)
    out = tmp_path_factory.mktemp("world") / "data"
    vq = _random_vq()
    build_world_dataset(str(out), vq, cfg, log=lambda *_: None)
    return cfg, out, vq, list(read_records(str(out)))


def _item_of(record, cfg):
    key = record.provenance["key"]  # "{seed}:{split}:{category}:{index}"
    return make_item(record.category, int(key.rsplit(":", 1)[1]), cfg.seed, "train", cfg.image_size)


def test_each_judged_image_gets_one_question_conversation_answered_by_the_oracle(world_data):
    cfg, tmp_path, _, records = world_data
    judged = [r for r in records if r.kind == "judgement"]
    asked = [r for r in records if r.kind == "caption" and r.instruction is not None]
    assert len(asked) == len(judged) > 0
    for r in asked:
        item = _item_of(r, cfg)
        image = np.asarray(PIL.Image.open(tmp_path / r.image.path).convert("RGB"))
        report = judge(item.scene, image, item.questions)
        questions = {q.id: q for q in item.questions}
        turns = [r.provenance["question"], *r.provenance.get("followups", [])]
        assert len(turns) == min(8, len(item.questions)) and len({t["id"] for t in turns}) == len(turns)
        asked_pairs = [(r.instruction, r.prompt), *(r.followups or ())]
        expected = [(question_text(questions[t["id"]]), report.answers[t["id"]] or "none") for t in turns]
        assert asked_pairs == expected
    assert any(r.followups for r in asked)


def test_prompt_ratings_are_labelled_by_construction(world_data):
    from unicorn.selfplay.proposer import rule_violation
    from unicorn.selfplay.recipe import load_recipe

    cfg, _, _, records = world_data
    recipe = load_recipe("toyworld")
    rated = [r for r in records if r.provenance.get("role") == "rate_prompt"]
    assert {r.provenance["rated"] for r in rated} == {"own", "other", "garbled"}
    for r in rated:
        item = _item_of(r, cfg)
        assert r.instruction == recipe.render_rate_prompt(r.category, r.prompt)  # what the loop would ask
        source = r.provenance["rated"]
        if source == "own":
            assert r.prompt == item.prompt
            assert r.response == rate_response(True, True, len(item.questions))
        elif source == "other":  # another category's prompt passes that category's checks, and is labelled off-rule
            assert r.prompt != item.prompt and r.response.startswith("valid yes, follows the rule no")
            assert any(rule_violation(r.prompt, c.checks) is None for name, c in recipe.categories.items()
                       if name != r.category)
        else:
            assert r.prompt.lower() != item.prompt.lower() and r.response.endswith("Score: 0")


def test_reflection_records_edit_a_worse_image_into_the_clean_render(world_data):
    cfg, tmp_path, vq, records = world_data
    reflections = [r for r in records if r.kind == "reflection"]
    assert reflections
    for r in reflections:
        item = _item_of(r, cfg)
        assert r.provenance["loser_variant"] in LOSER_VARIANTS
        # the category's images are encoded in one batch; alone, a random codec's near ties may round otherwise
        alone = vq_codes(vq, [item.rgb])[0]
        assert np.mean([a == b for a, b in zip(r.winner_image.vq_codes, alone)]) >= 0.9
        loser = np.asarray(PIL.Image.open(tmp_path / r.loser_image.path).convert("RGB"))
        assert r.provenance["loser_oracle_score"] == judge(item.scene, loser, item.questions).score
        assert r.winner_score == judge(item.scene, item.rgb, item.questions).score >= r.loser_score


def test_mixed_codes_keep_most_of_the_render_and_take_a_block_from_the_donor():
    import random

    side = 16
    clean, donor = list(range(side * side)), [1000 + k for k in range(side * side)]
    changed, with_block = [], 0
    for seed in range(50):
        mixed = mixed_codes(clean, donor, random.Random(seed))
        assert mixed == mixed_codes(clean, donor, random.Random(seed)) and len(mixed) == side * side
        with_block += sum(mixed[k] == donor[k] for k in range(len(mixed))) >= (side // 5) ** 2 // 2
        assert all(c in clean or c in donor for c in mixed)
        changed.append(sum(a != b for a, b in zip(mixed, clean)) / len(clean))
    assert 0.05 < np.mean(changed) < 0.5 and max(changed) < 0.7  # half-right drawings, not other scenes
    assert 30 <= with_block < 50  # most take a block of the donor at its own place


def test_mixed_images_are_decoded_mixtures_labelled_by_the_oracle(world_data):
    cfg, tmp_path, vq, records = world_data
    mixed = [r for r in records if r.kind == "judgement" and r.provenance["variant"] == "vq_mixed"]
    assert mixed
    for r in mixed:
        item = _item_of(r, cfg)
        image = np.asarray(PIL.Image.open(tmp_path / r.image.path).convert("RGB"))
        assert r.score == judge(item.scene, image, item.questions).score
        assert not np.array_equal(image, item.rgb)  # a decoded mixture, not the render
