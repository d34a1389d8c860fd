"""`unicorn toyworld pretrain --quick` runs the whole pipeline (tokenizer, VQ, CPR data, the project's trainer, the
model's own drawings judged by the oracle, a second LM round, export) and is deterministic: the same seed gives the
same model.safetensors bytes."""
import os

import pytest

from unicorn.toyworld.model.data import WorldDataConfig, corpus_texts
from unicorn.toyworld.model.tokenizer import template_texts, train_world_tokenizer


def test_world_tokenizer_is_deterministic_and_compact():
    corpus = corpus_texts(WorldDataConfig(scenes_per_category=4)) + template_texts()
    a, b = train_world_tokenizer(corpus, 640), train_world_tokenizer(corpus, 640)
    assert a.to_str() == b.to_str()
    assert len(a.encode("a large red circle to the left of a small blue square.").ids) <= 14


@pytest.mark.slow
def test_quick_pretrain_is_deterministic_and_reuses_its_vq_stage(tmp_path, capsys):
    from unicorn.toyworld.cli import main
    from unicorn.toyworld.pretrain import file_sha256

    hashes = []
    for run in ("a", "b", "a"):  # the second "a" finds a.work/vq and skips VQ training
        out = tmp_path / run
        assert main(["pretrain", "--out", str(out), "--seed", "3", "--quick"]) == 0
        assert {"config.json", "tokenizer.json", "model.safetensors", "pretrain_report.json"} <= set(os.listdir(out))
        hashes.append(file_sha256(str(out / "model.safetensors")))
    assert hashes[0] == hashes[1] == hashes[2]
    # round 2 trained on round 1's records plus oracle judgements of round 1's own drawings
    import json

    from unicorn.cpr.schema import read_manifest, read_records
    from unicorn.toyworld.scene import CATEGORIES

    with open(tmp_path / "a" / "pretrain_report.json") as f:
        report = json.load(f)
    assert report["self_drawn"]["drawn"] == len(CATEGORIES) * 2 and report["lm_round2"]["steps"] == 2
    base, both = tmp_path / "a.work" / "data", tmp_path / "a.work" / "self_drawn"
    assert read_manifest(str(both)).num_records == read_manifest(str(base)).num_records + len(CATEGORIES) * 2 * 2
    drawn = [r for r in read_records(str(both)) if r.provenance.get("variant") == "self_drawn"]
    assert {r.kind for r in drawn} == {"judgement", "caption"}
    assert all((both / ref.path).is_file() for r in read_records(str(both)) for ref in r.images().values() if ref.path)
    # proposing is a text-only record (schema version 2), with no placeholder image
    proposing = [r for r in read_records(str(base)) if r.provenance.get("role") == "proposer"]
    assert proposing and {r.kind for r in proposing} == {"text"} and not (base / "images" / "blank.png").exists()
    assert capsys.readouterr().out.count("vq: reusing") == 1
    # the key pins the codec and training code: a stage from edited code is not loaded
    from unicorn.toyworld.pretrain import ModelArch, load_vq_stage

    vq_dir = str(tmp_path / "a.work" / "vq")
    with open(os.path.join(vq_dir, "stage.json")) as f:
        key = json.load(f)["key"]
    arch = ModelArch().vq_arch()
    assert load_vq_stage(vq_dir, key, arch) is not None
    edited = {**key, "code": {**key["code"], "unicorn.toyworld.model.vq_train": "0" * 64}}
    assert load_vq_stage(vq_dir, edited, arch) is None
    # without round 2 (the default), the export is round 1's model itself
    assert main(["pretrain", "--out", str(tmp_path / "r1"), "--seed", "3", "--quick", "--self-drawn-steps", "0"]) == 0
    assert file_sha256(str(tmp_path / "r1" / "model.safetensors")) == file_sha256(
        str(tmp_path / "a.work" / "round1" / "model.safetensors"))
    assert not (tmp_path / "r1.work" / "self_drawn").exists()
    # another seed is another VQ stage: retrained, not reused
    assert main(["pretrain", "--out", str(tmp_path / "a"), "--seed", "4", "--quick"]) == 0
    assert "vq: reusing" not in capsys.readouterr().out


@pytest.mark.parametrize("flag, value", [("--self-drawn-steps", "-3"), ("--self-drawn-per-prompt", "0")])
def test_bad_round_two_settings_are_refused_before_any_work(tmp_path, capsys, flag, value):
    from unicorn.toyworld.cli import main

    with pytest.raises(SystemExit):
        main(["pretrain", "--out", str(tmp_path / "m"), "--quick", flag, value])
    assert flag in capsys.readouterr().err
    assert not (tmp_path / "m.work").exists()
