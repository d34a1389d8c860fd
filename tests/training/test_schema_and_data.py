import json
import os

import pytest
import torch

from unicorn.cpr.schema import ImageRef, RecordError, T2IRecord, read_records, record_from_dict, write_dataset
from unicorn.models import load_model, load_tokenizer
from unicorn.training.data import IGNORE, DataConfig, Packer, SampleEncoder, VQCodeSource
from unicorn.training.model import packed_causal_mask


def test_record_roundtrip_and_field_errors(tmp_path):
    r = T2IRecord(id="a", category="counting", prompt="two cats", seed=3, image=ImageRef(path="images/a.png"))
    assert record_from_dict(json.loads(json.dumps(r.to_dict()))) == r
    bad = {**r.to_dict(), "score": 11}
    with pytest.raises(RecordError, match="'score'"):
        record_from_dict(bad)
    with pytest.raises(RecordError, match="'image'"):
        record_from_dict({**r.to_dict(), "image": {}})
    with pytest.raises(RecordError, match="'loser_image'"):
        record_from_dict({**r.to_dict(), "kind": "reflection", "image": None, "winner_image": {"path": "x.png"}})
    manifest = write_dataset(str(tmp_path), [r])
    assert manifest.counts["t2i"] == 1 and os.path.exists(tmp_path / "manifest.json")


def test_bad_record_names_file_and_line(tmp_path):
    r = T2IRecord(id="a", category="c", prompt="p", image=ImageRef(vq_codes=(1, 2)))
    write_dataset(str(tmp_path), [r, T2IRecord(id="b", category="c", prompt="q", image=ImageRef(vq_codes=(3,)))])
    shard = tmp_path / "data-00000.jsonl"
    lines = shard.read_text().splitlines()
    shard.write_text(lines[0] + "\n{not json\n" + lines[1].replace('"prompt": "q"', '"prompt": 5') + "\n")
    with pytest.raises(RecordError, match=r"data-00000.jsonl:2"):
        list(read_records(str(tmp_path), "stop"))
    warnings = []
    assert [x.id for x in read_records(str(tmp_path), "skip", warn=warnings.append)] == ["a"]
    assert "data-00000.jsonl:2" in warnings[0] and "data-00000.jsonl:3" in warnings[1] and "'prompt'" in warnings[1]


def _dataset(tiny_model, cpr_data, **kw):
    janus = load_model(tiny_model)
    enc = SampleEncoder(load_tokenizer(tiny_model), janus.spec, cpr_data,
                        VQCodeSource(janus.vqmodel, janus.image_processing, janus.spec))
    cfg = DataConfig(cpr_data, **{"seq_len": 512, "micro_batch": 2, **kw})
    return janus, cfg, enc


def test_packing_labels_and_resume(tiny_model, cpr_data):
    janus, cfg, enc = _dataset(tiny_model, cpr_data)
    ds = cfg.build(enc, janus.image_processing)
    batch = ds.next_batch()
    real = (batch["segment"] > 0).float().mean().item()
    assert real > 0.8, f"packing leaves {1 - real:.0%} padding"
    # labels: only targets, and each label is the next input token of its segment
    b, i = torch.nonzero(batch["text_labels"] != IGNORE)[0].tolist()
    assert batch["text_labels"][b, i] == batch["input_ids"][b, i + 1] and batch["segment"][b, i] == batch["segment"][b, i + 1]
    assert batch["pixel_values"].shape[0] == int((batch["source"] == 1).sum()) // janus.spec.num_image_tokens
    # resumable position
    state = ds.state_dict()
    expected = [ds.next_batch() for _ in range(3)]
    ds2 = cfg.build(enc, janus.image_processing)
    ds2.load_state_dict(json.loads(json.dumps(state)))
    for a, b2 in zip(expected, [ds2.next_batch() for _ in range(3)]):
        assert all(torch.equal(a[k], b2[k]) for k in a)
    # rank split: the two ranks' rows are the single-process rows, interleaved
    r0 = cfg.build(enc, janus.image_processing, rank=0, world_size=2)
    r1 = cfg.build(enc, janus.image_processing, rank=1, world_size=2)
    single = DataConfig(cpr_data, seq_len=512, micro_batch=4).build(enc, janus.image_processing).next_batch()
    a0, a1 = r0.next_batch(), r1.next_batch()
    assert torch.equal(single["input_ids"], torch.stack([a0["input_ids"][0], a1["input_ids"][0], a0["input_ids"][1], a1["input_ids"][1]]))


def test_packer_is_deterministic_first_fit():
    p = Packer([5, 3, 7, 2, 9], seq_len=10, seed=1, buffer_size=3)
    rows = [p.next_row() for _ in range(6)]
    q = Packer([5, 3, 7, 2, 9], seq_len=10, seed=1, buffer_size=3)
    assert rows == [q.next_row() for _ in range(6)]
    assert all(sum([5, 3, 7, 2, 9][i] for i in row) <= 10 for row in rows)


def test_packed_mask_matches_separate_sequences(tiny_model):
    janus = load_model(tiny_model)
    torch.manual_seed(0)
    h = janus.spec.hidden_size
    a, b = torch.randn(1, 5, h), torch.randn(1, 7, h)
    packed = torch.cat([a, b, torch.zeros(1, 3, h)], 1)
    positions = torch.tensor([[0, 1, 2, 3, 4, 0, 1, 2, 3, 4, 5, 6, 0, 0, 0]])
    segment = torch.tensor([[1] * 5 + [2] * 7 + [0] * 3])
    out = janus.forward_dense(packed, positions, packed_causal_mask(segment))
    ref_a = janus.forward_dense(a, torch.arange(5)[None])
    ref_b = janus.forward_dense(b, torch.arange(7)[None])
    torch.testing.assert_close(out[:, :5], ref_a, atol=1e-5, rtol=1e-5)
    torch.testing.assert_close(out[:, 5:12], ref_b, atol=1e-5, rtol=1e-5)



def _t2i_prompts(batch):
    """The prompt ids of every generation segment in a packed batch."""
    from unicorn.training.data import GEN_CODE

    for row in range(batch["input_ids"].shape[0]):
        for seg in batch["segment"][row].unique().tolist():
            span = (batch["segment"][row] == seg) & (seg > 0)
            source = batch["source"][row][span]
            if (source == GEN_CODE).any():
                yield batch["input_ids"][row][span][source != GEN_CODE].tolist()


def test_cond_dropout_trains_t2i_on_the_engines_content_free_prompt(tiny_model, cpr_data):
    from dataclasses import replace

    janus, cfg, enc = _dataset(tiny_model, cpr_data)
    spec = janus.spec
    dropping = replace(cfg, cond_dropout=0.5)
    ds = dropping.build(enc, janus.image_processing)
    prompts = [p for _ in range(8) for p in _t2i_prompts(ds.next_batch())]
    dropped = [p for p in prompts if p == spec.content_free(p)]  # only BOS, pads and <begin_of_image> left
    assert 0 < len(dropped) < len(prompts), (len(dropped), len(prompts))
    assert all(p[0] == spec.bos_token_id and p[-1] == spec.boi_token_id for p in dropped)
    # the coins depend on the stream position only: a resumed stream sees the same drops
    state = ds.state_dict()
    expected = ds.next_batch()
    again = dropping.build(enc, janus.image_processing)
    again.load_state_dict(state)
    assert all(torch.equal(expected[k], v) for k, v in again.next_batch().items())
    # no dropout leaves every prompt as it was
    plain = cfg.build(enc, janus.image_processing)
    assert not any(p == spec.content_free(p) for _ in range(8) for p in _t2i_prompts(plain.next_batch()))
    with pytest.raises(ValueError, match="cond-dropout"):
        replace(cfg, cond_dropout=1.0)
