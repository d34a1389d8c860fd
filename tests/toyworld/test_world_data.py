"""The oracle-labelled pretraining data: each judged image carries one question conversation whose answers are what
the oracle reads in that image, and the VQ work is batched and deduplicated without changing any code."""
import numpy as np
import PIL.Image
import torch

from unicorn.cpr.schema import read_records
from unicorn.models.vq import VQModel
from unicorn.toyworld.model.data import WorldDataConfig, build_world_dataset, make_item, vq_codes, vq_roundtrip
from unicorn.toyworld.oracle import judge
from unicorn.toyworld.pretrain import ModelArch
from unicorn.toyworld.roles import question_text


def _random_vq() -> VQModel:
    torch.manual_seed(0)
    arch = ModelArch()
    return VQModel(arch.vq_arch(), grid=arch.grid).eval()


def test_vq_codes_deduplicate_identical_images_to_the_same_codes():
    vq = _random_vq()
    items = [make_item("counting", i, 0, "train") for i in range(3)]
    rgbs = [items[0].rgb, items[1].rgb, items[0].rgb.copy(), items[2].rgb, items[1].rgb]
    codes = vq_codes(vq, rgbs, batch_size=2)
    one_by_one = [vq_codes(vq, [rgb])[0] for rgb in rgbs]
    assert codes == one_by_one and codes[0] == codes[2] and codes[1] == codes[4]
    recon, rt_codes = vq_roundtrip(vq, rgbs)
    assert rt_codes == codes and all(r.shape == (64, 64, 3) and r.dtype == np.uint8 for r in recon)


def test_each_judged_image_gets_one_question_conversation_answered_by_the_oracle(tmp_path):
    cfg = WorldDataConfig(scenes_per_category=2, judged_per_scene=3, questions_per_image=8, seed=0)
    build_world_dataset(str(tmp_path), _random_vq(), cfg, log=lambda *_: None)
    records = list(read_records(str(tmp_path)))
    judged = [r for r in records if r.kind == "judgement"]
    asked = [r for r in records if r.kind == "caption" and r.instruction is not None]
    assert len(asked) == len(judged) > 0
    by_key = {}
    for r in asked:
        key = r.provenance["key"]  # "{seed}:{split}:{category}:{index}"
        if key not in by_key:
            by_key[key] = make_item(r.category, int(key.rsplit(":", 1)[1]), cfg.seed, "train", cfg.image_size)
        item = by_key[key]
        image = np.asarray(PIL.Image.open(tmp_path / r.image.path).convert("RGB"))
        report = judge(item.scene, image, item.questions)
        questions = {q.id: q for q in item.questions}
        turns = [r.provenance["question"], *r.provenance.get("followups", [])]
        assert len(turns) == min(8, len(item.questions)) and len({t["id"] for t in turns}) == len(turns)
        asked_pairs = [(r.instruction, r.prompt), *(r.followups or ())]
        expected = [(question_text(questions[t["id"]]), report.answers[t["id"]] or "none") for t in turns]
        assert asked_pairs == expected
    assert any(r.followups for r in asked)
