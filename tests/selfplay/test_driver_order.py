"""The driver with a fake engine that finishes requests in a seeded random order (no model, fast): the epochs it
writes do not depend on the order outputs arrive in, every prompt is one image request with all its rollouts, and
judge requests are queued while other images are still being drawn."""
import json
import random

import torch
from PIL import Image

from unicorn.engine.outputs import ImageOutput, TextOutput, TextSample
from unicorn.selfplay.driver import SelfPlayConfig, SelfPlayDriver
from unicorn.selfplay.recipe import load_recipe
from unicorn.selfplay.store import RunDir

PROMPTS = ["Exactly {n} red circles.", "{n} blue squares and one green circle.", "Exactly {n} yellow diamonds."]


class FakeEngine:
    """Answers from the request's own seed; finishes 1-3 pending requests per step, picked by ``order_seed``."""

    def __init__(self, order_seed: int):
        self.rng = random.Random(order_seed)
        self.pending = {}
        self.next_id = 0
        self.log = []  # ("submit_text" | "submit_image" | "finish_image", request id)
        self.tokenizer = None

    def _submit(self, kind, prompt, params):
        self.next_id += 1
        self.pending[self.next_id] = (kind, prompt, params)
        self.log.append((f"submit_{kind}", self.next_id))
        return self.next_id

    def submit_text(self, prompt, params, priority=0):
        is_judge = isinstance(prompt["messages"][0]["content"], list)  # has an image part
        return self._submit("judge" if is_judge else "text", prompt, params)

    def submit_image(self, prompt, params, priority=0):
        return self._submit("image", prompt, params)

    def abort(self, rid):  # the driver's preflight probes: accepted, then aborted before any step
        self.pending.pop(rid)
        self.log.append(("abort", rid))
        return TextOutput(rid, [], [TextSample("", [], "abort")])

    def has_unfinished(self):
        return bool(self.pending)

    def step(self):
        ids = sorted(self.pending)
        done = self.rng.sample(ids, min(len(ids), self.rng.randint(1, 3)))
        outs = []
        for rid in done:
            kind, prompt, params = self.pending.pop(rid)
            if kind == "image":
                self.log.append(("finish_image", rid))
                images = [Image.new("RGB", (8, 8), (s % 256, 0, 0)) for s in params.seed]
                outs.append(ImageOutput(rid, [], images, torch.tensor([[s % 512] * 4 for s in params.seed]),
                                        finish_reasons=["length"] * params.n))
            elif kind == "text":
                text = PROMPTS[params.seed % 3].format(n=params.seed % 5 + 1)  # duplicates on purpose
                outs.append(TextOutput(rid, [], [TextSample(text, [1], "stop")]))
            else:
                outs.append(TextOutput(rid, [], [TextSample(f"looks fine.\nScore: {params.seed % 11}", [1], "stop")]))
        return outs


def _run(tmp_path, order_seed):
    recipe = load_recipe("toyworld")
    run = RunDir(tmp_path / f"run{order_seed}")
    run.open({"test": 1})
    engine = FakeEngine(order_seed)
    SelfPlayDriver(engine, recipe, SelfPlayConfig(12, seed=3, epoch_size=4), run, log=lambda *_: None).run()
    return engine, [run.read_epoch(k) for k in range(3)]


def test_epochs_do_not_depend_on_the_order_outputs_arrive_in(tmp_path):
    (e0, epochs0), (e1, epochs1) = _run(tmp_path, 0), _run(tmp_path, 1)
    assert e0.log != e1.log  # really different orders
    assert json.dumps(epochs0, sort_keys=True) == json.dumps(epochs1, sort_keys=True)
    slots = [s for e in epochs0 for s in e["slots"]]
    assert any(s["attempts"] for s in slots)  # duplicates were refused and asked again
    prompts = [s["prompt"] for s in slots if s["prompt"]]
    assert len(prompts) == len(set(prompts))


def test_one_image_request_per_prompt_and_judges_queued_as_images_arrive(tmp_path):
    engine, epochs = _run(tmp_path, 0)
    drawn = [s for e in epochs for s in e["slots"] if s["status"] == "done"]
    aborted = {rid for what, rid in engine.log if what == "abort"}
    images = [rid for what, rid in engine.log if what == "submit_image" and rid not in aborted]
    assert len(images) == len(drawn) and all(len(s["rollouts"]) == 8 for s in drawn)
    first_judge = next(i for i, (what, rid) in enumerate(engine.log) if what == "submit_judge" and rid not in aborted)
    finished_before = {rid for what, rid in engine.log[:first_judge] if what == "finish_image"}
    assert set(images) - finished_before  # some images were still being drawn when judging began
