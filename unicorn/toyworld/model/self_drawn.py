"""Judge data on the model's own drawings: the data set of the second pretraining round.

Round 1's judge learns on renders, degradations, wrong scenes and codec round trips, but what it must rank in
self-play are the model's own drawings: half-formed, smeared objects unlike any of those. Ranked by round 1's judge,
the best of 4 own drawings scored no better than a random one. So round 1's model draws ``drawings_per_prompt`` images
for each train prompt, the oracle labels every drawing (rubric reasoning + ``Score: N``, and one question about it),
and round 2 trains on round 1's records plus these. The oracle stays pretraining's teacher only: self-play never
sees it. Off by default (``steps=0``): three measured round-2 runs moved the judge's pair accuracy on its own
drawings from 0.50 to 0.53-0.59, but cost held-out judging and understanding (bench/toyworld/README.md).
"""
from __future__ import annotations

import os
import random
import shutil
from dataclasses import asdict, dataclass

import numpy as np

from unicorn.cpr.schema import ImageRef, read_records, write_dataset
from unicorn.toyworld.model.data import judgement_record, make_item, question_record
from unicorn.toyworld.oracle import judge
from unicorn.toyworld.scene import CATEGORIES

SELF_DIR = "images/self"


@dataclass(frozen=True)
class SelfDrawnConfig:
    scenes_per_category: int = 250  # train prompts drawn (the round-1 scenes: new drawings, new labels)
    drawings_per_prompt: int = 2
    temperature: float = 1.0
    cfg_scale: float = 1.0
    steps: int = 0  # round-2 LM steps from round 1's weights, fresh optimizer; 0: no round 2 (the shipped model)
    lr: float = 1e-3


def link_images(src_dir: str, dst_dir: str) -> int:
    """Hard-links (copies across file systems) every file under src_dir/images into dst_dir/images."""
    count = 0
    for root, _, files in os.walk(os.path.join(src_dir, "images")):
        target = os.path.join(dst_dir, os.path.relpath(root, src_dir))
        os.makedirs(target, exist_ok=True)
        for name in sorted(files):
            src, dst = os.path.join(root, name), os.path.join(target, name)
            try:
                os.link(src, dst)
            except OSError:
                shutil.copy2(src, dst)
            count += 1
    return count


def self_drawn_records(engine, cfg: SelfDrawnConfig, out_dir: str, seed: int, log=print) -> tuple[list, list[int]]:
    """Draws for the train prompts, writes the PNGs under out_dir/images/self; returns (records, oracle scores)."""
    from unicorn.engine.params import ImageGenParams

    items = [make_item(c, i, seed, "train") for c in CATEGORIES for i in range(cfg.scenes_per_category)]
    params = ImageGenParams(n=cfg.drawings_per_prompt, cfg_scale=cfg.cfg_scale, temperature=cfg.temperature, seed=seed)
    drawn = engine.generate_images([it.prompt for it in items], params)
    log(f"self-drawn: {len(items) * cfg.drawings_per_prompt} drawings of {len(items)} train prompts")
    os.makedirs(os.path.join(out_dir, SELF_DIR), exist_ok=True)
    records, scores = [], []
    for k, (item, out) in enumerate(zip(items, drawn)):
        rng = random.Random("self-drawn:" + item.key)
        for j, image in enumerate(out.images):
            rgb = np.asarray(image.convert("RGB"))
            report = judge(item.scene, rgb, item.questions)
            scores.append(report.score)
            rid = f"self-{item.category}-{k:05d}-{j}"
            ref = ImageRef(path=f"{SELF_DIR}/{rid}.png")
            image.save(os.path.join(out_dir, ref.path))
            provenance = {"source": "toyworld", "key": item.key, "variant": "self_drawn", "drawing": j,
                          "oracle": report.raw_score}
            records.append(judgement_record(f"{rid}-jud", item, ref, report, seed, provenance))
            q = rng.choice(item.questions)
            records.append(question_record(f"{rid}-q{q.id}", item, [q], ref, report, seed, provenance))
    return records, scores


def build_self_drawn_dataset(model_dir: str, base_dir: str, out_dir: str, cfg: SelfDrawnConfig, seed: int,
                             log=print) -> dict:
    """The round-2 data set at out_dir: base_dir's records and images plus judgements of model_dir's drawings."""
    from unicorn.engine.llm_engine import Engine

    shutil.rmtree(out_dir, ignore_errors=True)
    linked = link_images(base_dir, out_dir)
    engine = Engine(model_dir, seed=seed)
    records, scores = self_drawn_records(engine, cfg, out_dir, seed, log=log)
    base = list(read_records(base_dir))
    manifest = write_dataset(out_dir, base + records, source_model=model_dir, seed=seed, config=asdict(cfg))
    histogram = np.bincount(scores, minlength=11).tolist()
    log(f"self-drawn: oracle score histogram 0..10 {histogram}; {len(base)} round-1 records, {linked} images linked")
    return {"counts": manifest.counts, "num_records": manifest.num_records, "drawn": len(scores),
            "oracle_histogram": histogram, "oracle_mean": float(np.mean(scores)) if scores else None}
