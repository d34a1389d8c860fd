"""The UniCycle loop end to end on the embedded toy model: questions asked from the image alone, resume after an
interruption (and a torn last line) giving a byte-identical report, refused resumes, the model judge's path."""
import json

import pytest

from unicorn import Engine
from unicorn.cli import main
from unicorn.toyworld.model import default_model_path
from unicorn.toyworld.model.data import make_item
from unicorn.toyworld.roles import question_text
from unicorn.unicycle.judges import RuleJudge, make_judge, parse_verdict
from unicorn.unicycle.runner import RunConfig, ask, run
from unicorn.unicycle.toyworld_set import recipe_image_settings, toyworld_instances

N = 6


def _engine():
    return Engine(str(default_model_path()), num_kv_blocks=256, seed=0)


class Recording:
    """An engine wrapper that records what it is asked and can stop the run at the n-th image call."""

    def __init__(self, engine, stop_at_image_call=None):
        self.engine, self.stop_at = engine, stop_at_image_call
        self.image_prompts, self.text_requests, self.num_image_calls = [], [], 0

    def generate_images(self, prompts, params):
        self.num_image_calls += 1
        if self.num_image_calls == self.stop_at:
            raise KeyboardInterrupt("stopped")
        self.image_prompts += list(prompts)
        return self.engine.generate_images(prompts, params)

    def generate(self, requests, params):
        self.text_requests += list(requests)
        return self.engine.generate(requests, params)


def test_toyworld_set_is_the_worlds_test_split():
    instances = toyworld_instances(10)
    assert [i.category for i in instances[:9]] == ["attribute", "counting", "spatial", "interaction", "text", "style",
                                                   "scene", "knowledge", "imagination"]
    item = make_item("attribute", 1, 0, "test")
    inst = instances[9]
    assert inst.prompt == item.prompt and inst.id == "toyworld:0:test:attribute:1"
    assert [(q.id, q.type, q.answer, list(q.options)) for q in inst.questions] == \
        [(q.id, q.type, q.answer, q.options) for q in item.questions]
    assert all(q.grader == ("toyworld" if q.type == "open" else "exact") for i in instances for q in i.questions)
    for i, it in ((inst, item), (instances[4], make_item("text", 0, 0, "test"))):  # the model's trained wording
        assert [ask(q) for q in i.questions] == [question_text(q) for q in it.questions]
    assert recipe_image_settings() == {"cfg_scale": 3.0, "temperature": 1.0}


def test_run_resume_after_interruption_is_identical(tmp_path):
    full = tmp_path / "full"
    assert main(["unicycle", "run", "--toyworld", str(N), "--judge", "rule", "--out", str(full), "--batch", "2",
                 "--num-kv-blocks", "256"]) == 0
    report = json.loads((full / "report.json").read_text())
    assert report["overall"]["prompts"] == N and report["settings"]["cfg_scale"] == 3.0
    assert len(list((full / "images").glob("*.png"))) == N
    assert (full / "report.md").read_text().startswith("# UniCycle (our reconstruction")

    instances = toyworld_instances(N)
    cfg = RunConfig(**recipe_image_settings(), batch=2)
    model = str(default_model_path())
    part = tmp_path / "part"
    stopped = Recording(_engine(), stop_at_image_call=2)
    with pytest.raises(KeyboardInterrupt):
        run(stopped, instances, RuleJudge(), part, cfg, f"toyworld-test-{N}", model=model)
    assert len((part / "answers.jsonl").read_text().splitlines()) == 2 and not (part / "report.json").exists()
    # each question went alone with its image: no prompt text, one image part, the question as the model knows it
    for request in stopped.text_requests:
        content = request["messages"][0]["content"]
        assert [c["type"] for c in content] == ["image", "text"]
        assert all(inst.prompt not in content[1]["text"] for inst in instances)
    assert [r["messages"][0]["content"][1]["text"] for r in stopped.text_requests] == \
        [ask(q) for inst in instances[:2] for q in inst.questions]
    with open(part / "answers.jsonl", "a") as f:
        f.write('{"id": "toyworld:0:te')  # a torn line, as a crash mid-write leaves it

    resumed = Recording(_engine())
    run(resumed, instances, RuleJudge(), part, cfg, f"toyworld-test-{N}", model=model)
    assert resumed.image_prompts == [inst.prompt for inst in instances[2:]]  # answered instances are not redone
    for name in ("report.json", "report.md", "answers.jsonl", "verdicts.jsonl"):
        assert (part / name).read_bytes() == (full / name).read_bytes(), name

    with pytest.raises(ValueError, match="another settings"):
        run(_engine(), instances, RuleJudge(), part, RunConfig(**recipe_image_settings(), seed=1), f"toyworld-test-{N}",
            model=model)


def test_model_judge_through_the_engine(tmp_path):
    instances = toyworld_instances(2)
    judge = make_judge(f"model:{default_model_path()}", {"num_kv_blocks": 256})
    report = run(_engine(), instances, judge, tmp_path, RunConfig(batch=2), "toy", model="toy")
    asked = [q for inst in report["instances"] for q in inst["questions"] if q["type"] != "text"]
    assert asked and all(isinstance(q["reply"], str) for q in asked)
    assert all((q["score"] is None) == (parse_verdict(q["reply"]) is None) for q in asked)
    assert report["overall"]["unparsed"] == sum(q["score"] is None for q in asked)
