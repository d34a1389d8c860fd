"""Deterministic (scene, prompt, questions, image) examples per category, written as JSONL + PNG.

Every example's randomness comes from its own seed string, so example i of a category is the same
whatever N is or which categories are asked for. Files appear atomically (temp file, then rename).
"""
from __future__ import annotations

import json
import os
import random
from dataclasses import asdict, dataclass
from pathlib import Path

from PIL import Image

from .prompts import make_prompt
from .questions import make_questions
from .render import DEFAULT_SIZE, render
from .sampler import sample_scene
from .scene import CATEGORIES, SCENE_VERSION


@dataclass
class Example:
    id: str
    category: str
    seed: str  # the example's rng seed; with SCENE_VERSION it regenerates everything below
    prompt: str
    scene: dict
    questions: list[dict]
    image: str  # PNG path relative to the JSONL file's folder
    image_size: int
    version: int = SCENE_VERSION

    def to_dict(self) -> dict:
        return asdict(self)


def make_example(category: str, index: int, seed: int = 0, image_size: int = DEFAULT_SIZE,
                 split: str = "train") -> tuple[Example, Image.Image]:
    """Example `index` of a category in one split (splits.py) under a global seed, and its rendered image."""
    example_seed = f"{seed}:{split}:{category}:{index}"
    rng = random.Random(example_seed)
    scene = sample_scene(category, rng, split)
    prompt = make_prompt(scene, rng)
    questions = make_questions(scene, rng)
    example_id = f"{category}-{split}-{seed}-{index:06d}"
    plain = json.loads(json.dumps({"scene": scene.to_dict(), "questions": [q.to_dict() for q in questions]}))  # tuples -> lists
    example = Example(example_id, category, example_seed, prompt, plain["scene"], plain["questions"],
                      f"images/{example_id}.png", image_size)
    return example, render(scene, image_size)


def generate(out_dir: str | os.PathLike, num_per_category: int, seed: int = 0, image_size: int = DEFAULT_SIZE,
             categories: tuple[str, ...] = CATEGORIES, split: str = "train") -> Path:
    """Write out_dir/examples.jsonl and out_dir/images/*.png; returns the JSONL path."""
    out = Path(out_dir)
    (out / "images").mkdir(parents=True, exist_ok=True)
    jsonl = out / "examples.jsonl"
    lines = []
    for category in categories:
        for index in range(num_per_category):
            example, image = make_example(category, index, seed, image_size, split)
            _atomic_write(out / example.image, lambda f, image=image: image.save(f, format="PNG"))
            lines.append(json.dumps(example.to_dict(), sort_keys=True))
    _atomic_write(jsonl, lambda f: f.write("".join(line + "\n" for line in lines).encode()))
    return jsonl


def load(jsonl: str | os.PathLike) -> list[Example]:
    with open(jsonl) as f:
        return [Example(**json.loads(line)) for line in f if line.strip()]


def _atomic_write(path: Path, write) -> None:
    tmp = path.with_name(path.name + f".tmp{os.getpid()}")
    with open(tmp, "wb") as f:
        write(f)
    os.replace(tmp, path)
