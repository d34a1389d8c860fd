"""TIIF-Bench's file layout read from files the test writes, the "no" / multiple-choice builder (local
OpenAI-compatible server and the toy model), and results in TIIF's judge-output layout checked with TIIF's own
summary rule (eval/summary_results.py: gt.strip().lower() == pred.strip().lower())."""
import json
import os

import pytest

from unicorn.cli import main
from unicorn.toyworld.model import default_model_path
from unicorn.unicycle.clients import EngineClient, OpenAIClient
from unicorn.unicycle.schema import SchemaError, load_instances
from unicorn.unicycle.tiif import build_extra_items, parse_extra, read_tiif

PROMPTS = {
    "color+2d": [
        {"type": "color+2d", "short_description": "The brown clock is on the red car.",
         "long_description": "A long tale of a brown clock resting atop a crimson car."},
        {"type": "color+2d", "short_description": "The white cloud is right of the blue cup.",
         "long_description": "A fluffy white cloud floats to the right of a serene blue cup."}],
    "text": [{"type": "text", "short_description": "A sign with the text \"tea\".",
              "long_description": "A wooden sign on which the word \"tea\" is painted."}],
}
EVALS = {
    "color+2d": [
        {"type": "color+2d", "yn_question_list": ["Is there a clock in the image?  ", "Is the car red?  "],
         "yn_answer_list": ["yes", "yes"]},
        {"type": "color+2d", "yn_question_list": ["Is there a cloud?", "Is the cup red?", "Is the cloud white?"],
         "yn_answer_list": ["yes", "no", "yes"]}],
    "text": [{"type": "text", "yn_question_list": ["Is the text 'tea' in the image? Answer with yes or no."],
              "yn_answer_list": ["Yes"]}],
}


def write_tiif(root, split="testmini", prompts=PROMPTS, evals=EVALS):
    for folder, table, suffix in ((f"{split}_prompts", prompts, "_prompts"), (f"{split}_eval_prompts", evals, "_eval_prompts")):
        d = root / "data" / folder
        d.mkdir(parents=True, exist_ok=True)
        for cat, lines in table.items():
            (d / f"{cat}{suffix}.jsonl").write_text("".join(json.dumps(l) + "\n" for l in lines))
    return root


def test_reader_on_written_files(tmp_path):
    root = write_tiif(tmp_path / "TIIF-Bench")
    instances = read_tiif(root, "testmini")
    assert [i.id for i in instances] == ["tiif-testmini/color+2d/short/0", "tiif-testmini/color+2d/long/0",
                                         "tiif-testmini/color+2d/short/1", "tiif-testmini/color+2d/long/1",
                                         "tiif-testmini/text/short/0", "tiif-testmini/text/long/0"]
    first, long_ = instances[0], instances[1]
    assert first.prompt == PROMPTS["color+2d"][0]["short_description"]
    assert long_.prompt == PROMPTS["color+2d"][0]["long_description"] and long_.questions == first.questions
    assert [(q.id, q.type, q.question, q.answer) for q in instances[2].questions] == [
        ("yn0", "yesno", "Is there a cloud?", "yes"), ("yn1", "yesno", "Is the cup red?", "no"),
        ("yn2", "yesno", "Is the cloud white?", "yes")]
    assert instances[4].questions[0].answer == "yes"  # "Yes" lower-cased
    assert first.meta["tiif"] == {"split": "testmini", "type": "color+2d", "desc": "short_description",
                                  "jsonl_file": "color+2d_eval_prompts.jsonl", "line_idx": 0}
    assert [i.id for i in read_tiif(root / "data", "testmini", ("long",))][:1] == ["tiif-testmini/color+2d/long/0"]


def test_reader_errors_name_the_file(tmp_path):
    root = write_tiif(tmp_path / "a", evals={**EVALS, "text": []})
    with pytest.raises(SchemaError, match=r"text_eval_prompts.jsonl: 0 lines but .*text_prompts.jsonl has 1"):
        read_tiif(root)
    root = write_tiif(tmp_path / "b", evals={**EVALS, "text": [{"yn_question_list": ["Q?"], "yn_answer_list": ["maybe"]}]})
    with pytest.raises(SchemaError, match=r"text_eval_prompts.jsonl:1: field 'yn_answer_list' must hold yes or no"):
        read_tiif(root)
    root = write_tiif(tmp_path / "c", prompts={**PROMPTS, "text": [{"type": "text", "short_description": "x"}]})
    with pytest.raises(SchemaError, match=r"text_prompts.jsonl:1: field 'long_description'"):
        read_tiif(root)
    root = write_tiif(tmp_path / "d")
    os.remove(root / "data" / "testmini_eval_prompts" / "text_eval_prompts.jsonl")
    with pytest.raises(FileNotFoundError, match="text_eval_prompts.jsonl"):
        read_tiif(root)
    with pytest.raises(FileNotFoundError, match="no test_prompts folder"):
        read_tiif(root, "test")


def test_builder_through_openai_compatible_server(chat_server, tmp_path):
    _, url = chat_server
    instances = read_tiif(write_tiif(tmp_path / "t"), variants=("short",))
    out = tmp_path / "extra.jsonl"
    built = build_extra_items(instances, OpenAIClient(url, model="writer"), out, num_mc=1)
    # balanced: as many "no" questions as the prompt has more yes than no answers (2-0, 2-1, 1-0)
    assert [sum(q.id.startswith("no") for q in b.questions) for b in built] == [2, 1, 1]
    assert [sum(q.type == "mc" for q in b.questions) for b in built] == [1, 1, 1]
    assert load_instances(out) == built
    mc = built[0].questions[-1]
    assert mc.answer == "The" and mc.answer in mc.options and built[0].questions[2].answer == "no"
    review = [json.loads(l) for l in out.with_name("extra.review.jsonl").read_text().splitlines()]
    assert len(review) == 3 and all("bad mc question" in " ".join(r["rejected"]) for r in review)
    assert built[0].meta["extra_items"]["writer"].startswith("openai:")


def test_builder_with_the_toy_model(tmp_path):
    from unicorn import Engine

    instances = read_tiif(write_tiif(tmp_path / "t"), variants=("short",))
    client = EngineClient(Engine(str(default_model_path()), num_kv_blocks=256), max_tokens=8, name="toy")
    built = build_extra_items(instances, client, tmp_path / "extra.jsonl")
    review = [json.loads(l) for l in (tmp_path / "extra.review.jsonl").read_text().splitlines()]
    for inst, b, r in zip(instances, built, review):  # whatever the toy writes, only what validates is added
        nos, mcs, _ = parse_extra(r["reply"], len(b.questions), 2)
        assert b.questions[: len(inst.questions)] == inst.questions
        assert len(b.questions) - len(inst.questions) == len(r["added"]) <= len(nos) + len(mcs)


def test_parse_extra_rejects_what_does_not_validate():
    reply = 'x {"no": ["Is it blue?", "Is it blue?", 3], "mc": [{"question": "Q", "options": ["a", "a"], "answer": "a"}]}'
    nos, mcs, rejected = parse_extra(reply, 5, 2)
    assert nos == ["Is it blue?"] and mcs == [] and len(rejected) == 3
    assert parse_extra("no json here", 1, 1) == ([], [], ["no JSON object in the reply"])


def test_run_writes_tiif_judge_output_layout(tmp_path):
    root = write_tiif(tmp_path / "t")
    out = tmp_path / "out"
    assert main(["unicycle", "run", "--tiif", str(root), "--tiif-variants", "short", "--judge", "rule",
                 "--out", str(out), "--num-kv-blocks", "256"]) == 0
    report = json.loads((out / "report.json").read_text())
    base = out / "tiif_eval" / "toyworld-janus"
    files = sorted(p.relative_to(base).as_posix() for p in base.rglob("*.json"))
    assert files == ["color+2d/short/0.json", "color+2d/short/1.json", "text/short/0.json"]
    record = json.loads((base / "color+2d/short/1.json").read_text())
    assert set(record) == {"attribute", "desc", "jsonl_file", "line_idx", "questions", "gt_answers", "model_pred",
                           "model_output"}
    assert record["questions"] == EVALS["color+2d"][1]["yn_question_list"] and record["line_idx"] == 1
    # TIIF's summary rule over our files equals our rule judge's yes/no accuracy
    total = correct = 0
    for path in base.rglob("*.json"):
        data = json.loads(path.read_text())
        for gt, pred in zip(data["gt_answers"], data["model_pred"]):
            total += 1
            correct += gt.strip().lower() == pred.strip().lower()
    scores = [q["score"] for inst in report["instances"] for q in inst["questions"]]
    assert total == len(scores) == 6 and correct == sum(scores)
