"""CPR schema version 2: a text-only kind, one column set for every kind (provenance as a JSON string), version-1
data sets still read, and one-line errors naming file, line and field."""
import json

import PIL.Image
import pytest

from unicorn.cpr.schema import (
    COLUMNS, SCHEMA_VERSION, CaptionRecord, ImageRef, JudgementRecord, RecordError, ReflectionRecord, T2IRecord,
    TextRecord, read_manifest, read_records, record_from_dict, write_dataset,
)
from unicorn.models import load_model, load_tokenizer
from unicorn.models.janus_chat import expand_image_placeholders, format_chat, understanding_prompt
from unicorn.training.data import IGNORE, DataConfig, SampleEncoder, VQCodeSource

IMAGE = ImageRef(path="images/a.png")


def _one_of_each() -> list:
    meta = dict(category="attribute", prompt="a red circle", seed=1, provenance={"round": 0, "scores": [3, 9]})
    return [
        T2IRecord(id="t", image=ImageRef(vq_codes=(1, 2, 3)), score=9, **meta),
        CaptionRecord(id="c", image=IMAGE, **meta),
        CaptionRecord(id="q", image=IMAGE, instruction="How many circles are there?",
                      followups=(("What colour is the circle?", "red"), ("Is there text?", "no")), **meta),
        JudgementRecord(id="j", image=IMAGE, reasoning="colours right.", score=8, **meta),
        ReflectionRecord(id="r", loser_image=IMAGE, winner_image=ImageRef(vq_codes=(4, 5)), loser_score=2,
                         winner_score=9, **meta),
        TextRecord(id="x", instruction="Propose a new text-to-image prompt in the category 'attribute'.",
                   response="a red circle", **meta),
    ]


def test_every_kind_writes_the_same_columns_and_reads_back(tmp_path):
    records = _one_of_each()
    manifest = write_dataset(str(tmp_path), records, shard_size=2)
    assert manifest.schema_version == SCHEMA_VERSION == 2 and manifest.counts["text"] == 1
    lines = [json.loads(line) for shard in manifest.shards for line in (tmp_path / shard).read_text().splitlines()]
    assert all(list(d) == list(COLUMNS) for d in lines)  # one column set, one order, across shards and kinds
    assert all(isinstance(d["provenance"], str) and json.loads(d["provenance"]) == records[0].provenance for d in lines)
    assert list(read_records(str(tmp_path))) == records
    assert all(record_from_dict(json.loads(json.dumps(r.to_dict()))) == r for r in records)


def _write_v1(path, lines: list[dict], manifest: bool = True) -> None:
    """A data set in the version-1 layout: only each kind's own fields, provenance as a nested object."""
    path.mkdir(parents=True, exist_ok=True)
    (path / "data-00000.jsonl").write_text("".join(json.dumps(d) + "\n" for d in lines))
    if manifest:
        (path / "manifest.json").write_text(json.dumps({
            "num_records": len(lines), "counts": {}, "shards": ["data-00000.jsonl"], "source_model": None, "seed": 0,
            "config": {}, "schema_version": 1}))


V1_LINES = [
    {"id": "t", "kind": "t2i", "category": "counting", "prompt": "two cats", "seed": 3, "provenance": {"round": 1},
     "image": {"path": None, "vq_codes": [1, 2]}, "score": None},
    {"id": "c", "kind": "caption", "category": "counting", "prompt": "two cats", "seed": None, "provenance": {},
     "image": {"path": "images/a.png", "vq_codes": None}, "instruction": None},
    {"id": "j", "kind": "judgement", "category": "counting", "prompt": "two cats", "seed": 1,
     "provenance": {"judge": {"raw": "Score: 4"}}, "image": {"path": "images/a.png"}, "reasoning": "one cat.",
     "score": 4, "instruction": None},
    {"id": "r", "kind": "reflection", "category": "counting", "prompt": "two cats", "loser_image": {"path": "images/a.png"},
     "winner_image": {"vq_codes": [7]}, "loser_score": 2, "winner_score": 9},
]


@pytest.mark.parametrize("manifest", [True, False], ids=["manifest", "shards-only"])
def test_version_1_data_sets_still_read(tmp_path, manifest):
    _write_v1(tmp_path, V1_LINES, manifest)
    assert read_manifest(str(tmp_path)).schema_version == (1 if manifest else None)
    records = list(read_records(str(tmp_path)))
    assert [r.kind for r in records] == ["t2i", "caption", "judgement", "reflection"]
    assert records[0].provenance == {"round": 1} and records[2].provenance == {"judge": {"raw": "Score: 4"}}
    assert records[3].winner_image.vq_codes == (7,) and records[1].instruction is None
    # rewritten, it is a version-2 data set with the same records
    write_dataset(str(tmp_path / "v2"), records)
    assert list(read_records(str(tmp_path / "v2"))) == records


def test_version_1_has_no_text_kind(tmp_path):
    _write_v1(tmp_path, [{"id": "x", "kind": "text", "category": "c", "prompt": "p", "instruction": "i", "response": "r"}])
    with pytest.raises(RecordError, match=r"data-00000.jsonl:1: bad record: field 'kind'.*schema version 1"):
        list(read_records(str(tmp_path)))


def _bad(record: dict) -> dict:
    return {**TextRecord(id="x", category="c", prompt="p", instruction="i", response="r").to_dict(), **record}


@pytest.mark.parametrize("change, field", [
    ({"provenance": {"round": 1}}, "provenance"),  # a nested object: the version-1 layout in a version-2 shard
    ({"provenance": "{round"}, "provenance"),
    ({"provenance": "[1, 2]"}, "provenance"),
    ({"reasoning": "not for text records"}, "reasoning"),
    ({"image": {"path": "images/a.png"}}, "image"),
    ({"response": None}, "response"),
    ({"instruction": "  "}, "instruction"),
    ({"colour": "red"}, "colour"),
])
def test_a_bad_line_gets_one_line_naming_file_line_and_field(tmp_path, change, field):
    good = TextRecord(id="ok", category="c", prompt="p", instruction="i", response="r")
    write_dataset(str(tmp_path), [good])
    shard = tmp_path / "data-00000.jsonl"
    shard.write_text(shard.read_text() + json.dumps(_bad(change)) + "\n")
    with pytest.raises(RecordError) as err:
        list(read_records(str(tmp_path)))
    message = str(err.value)
    assert "\n" not in message and f"data-00000.jsonl:2: bad record: field {field!r}" in message, message
    warnings = []
    assert [r.id for r in read_records(str(tmp_path), "skip", warn=warnings.append)] == ["ok"]
    assert len(warnings) == 1 and "\n" not in warnings[0]


def test_writing_a_bad_record_names_it():
    with pytest.raises(RecordError, match=r"record 'x': field 'provenance'"):
        write_dataset("/nonexistent-but-unreached", [TextRecord(id="x", category="c", prompt="p", instruction="i",
                                                                 response="r", provenance={"f": object()})])


@pytest.mark.parametrize("followups, field", [
    ([], "followups"),
    ("red", "followups"),
    ([["What colour?"]], "followups[0]"),
    ([["What colour?", "red"], ["Is there text?", " "]], "followups[1]"),
])
def test_bad_followups_are_named(tmp_path, followups, field):
    line = {**CaptionRecord(id="c", category="c", prompt="two", image=IMAGE).to_dict(), "followups": followups}
    with pytest.raises(RecordError) as err:
        record_from_dict(line)
    assert f"field {field!r}" in str(err.value) and "\n" not in str(err.value), str(err.value)


def test_caption_followups_supervise_every_answer_in_one_conversation(tiny_model, tmp_path):
    janus = load_model(tiny_model)
    tokenizer = load_tokenizer(tiny_model)
    (tmp_path / "images").mkdir()
    PIL.Image.new("RGB", (32, 32), (200, 30, 30)).save(tmp_path / "images" / "a.png")
    turns = [("How many circles are there?", "two"), ("What colour is the circle?", "red"), ("Is there text?", "no")]
    record = CaptionRecord(id="q", category="counting", prompt=turns[0][1], image=IMAGE, instruction=turns[0][0],
                           followups=tuple(turns[1:]))
    encoder = SampleEncoder(tokenizer, janus.spec, str(tmp_path),
                            VQCodeSource(janus.vqmodel, janus.image_processing, janus.spec))
    sample = encoder.encode(record)
    assert encoder.length(record) == len(sample) and sample.images == [str(tmp_path / "images" / "a.png")]
    # the segment is the whole conversation as the chat format writes it (reference: format_chat of every turn)
    messages = [{"role": "user", "content": [{"type": "image"}, {"type": "text", "text": turns[0][0]}]},
                {"role": "assistant", "content": turns[0][1]}]
    for question, answer in turns[1:]:
        messages += [{"role": "user", "content": question}, {"role": "assistant", "content": answer}]
    n = janus.spec.num_image_tokens
    reference = expand_image_placeholders(format_chat(messages, add_generation_prompt=False), n)
    assert tokenizer.decode(sample.tokens, skip_special_tokens=False) == tokenizer.decode(
        tokenizer.encode(reference, add_bos=True), skip_special_tokens=False)
    # every answer (with its end-of-sentence token) is a target; no question or image token is
    targets = [t for t in sample.text_labels if t != IGNORE]
    eos = janus.spec.eos_token_id
    assert targets == [t for _, a in turns for t in tokenizer.encode(" " + a, add_bos=False) + [eos]]
    assert sample.text_labels[-1] == IGNORE and sample.tokens[-1] == eos


def test_text_records_train_on_the_response_only(tiny_model, tmp_path):
    janus = load_model(tiny_model)
    tokenizer = load_tokenizer(tiny_model)
    instruction = "Propose a new text-to-image prompt in the category 'counting'."
    record = TextRecord(id="x", category="counting", prompt="three red squares", instruction=instruction,
                        response="three red squares")
    write_dataset(str(tmp_path), [record])
    encoder = SampleEncoder(tokenizer, janus.spec, str(tmp_path),
                            VQCodeSource(janus.vqmodel, janus.image_processing, janus.spec))
    sample = encoder.encode(record)
    # the prompt is what the engine builds for a text-only chat request
    prompt_ids = tokenizer.encode(understanding_prompt([{"role": "user", "content": instruction}], 0), add_bos=True)
    assert sample.tokens[: len(prompt_ids)] == prompt_ids and sample.images == []
    assert janus.spec.image_token_id not in sample.tokens
    targets = [t for t in sample.text_labels if t != IGNORE]
    assert targets == tokenizer.encode(" three red squares", add_bos=False) + [janus.spec.eos_token_id]
    assert all(t == IGNORE for t in sample.image_labels)
    batch = DataConfig(str(tmp_path), seq_len=256, micro_batch=1).build(encoder, janus.image_processing).next_batch()
    assert batch["pixel_values"].shape[0] == 0 and (batch["text_labels"] != IGNORE).sum() == len(targets)


def test_the_trainer_reads_a_version_1_data_set(tiny_model, cpr_data, tmp_path):
    """The synthetic set's version-1 kinds, written in the version-1 layout, pack into the same batches as the same
    records written as version 2."""
    import os
    import shutil

    import torch

    records = [r for r in read_records(cpr_data) if r.kind != "text"]
    v1, v2 = tmp_path / "v1", tmp_path / "v2"
    for path in (v1, v2):
        shutil.copytree(os.path.join(cpr_data, "images"), path / "images")
    _write_v1(v1, [{**{k: v for k, v in r.to_dict().items() if v is not None}, "provenance": r.provenance}
                   for r in records])
    write_dataset(str(v2), records)
    janus = load_model(tiny_model)
    codes = VQCodeSource(janus.vqmodel, janus.image_processing, janus.spec)
    batches = []
    for data in (str(v1), str(v2)):
        encoder = SampleEncoder(load_tokenizer(tiny_model), janus.spec, data, codes)
        batches.append(DataConfig(data, seq_len=512, micro_batch=2).build(encoder, janus.image_processing).next_batch())
    assert all(torch.equal(batches[0][k], batches[1][k]) for k in batches[0])


def test_every_kind_round_trips_through_parquet_shards(tmp_path):
    """The fixed Arrow schema holds every field of every kind, caption follow-ups included."""
    records = _one_of_each()
    write_dataset(str(tmp_path), records, shard_format="parquet")
    assert sorted(read_records(str(tmp_path)), key=lambda r: r.id) == sorted(records, key=lambda r: r.id)
    assert any(r.followups for r in read_records(str(tmp_path)) if r.kind == "caption")
