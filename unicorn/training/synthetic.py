"""A small, fully learnable CPR data set of coloured shapes (for tests, benchmarks and smoke runs)."""
from __future__ import annotations

import os
import random

import PIL.Image
import PIL.ImageDraw

from unicorn.cpr.schema import (CaptionRecord, ImageRef, JudgementRecord, Manifest, ReflectionRecord, T2IRecord,
                                TextRecord, write_dataset)

COLOURS = {"red": (220, 30, 30), "green": (30, 180, 60), "blue": (40, 60, 220), "yellow": (240, 220, 40)}
SHAPES = ("square", "circle")


def draw(colour: str, shape: str, size: int, background=(255, 255, 255)) -> PIL.Image.Image:
    image = PIL.Image.new("RGB", (size, size), background)
    box = (size // 6, size // 6, size - size // 6, size - size // 6)
    d = PIL.ImageDraw.Draw(image)
    (d.rectangle if shape == "square" else d.ellipse)(box, fill=COLOURS[colour])
    return image


def shape_codes(colour: str, shape: str, grid: int) -> tuple[int, ...]:
    """Structured stand-in VQ codes (background 0, the shape's cells 1 + its colour/shape index), row-major."""
    code = 1 + list(COLOURS).index(colour) * len(SHAPES) + SHAPES.index(shape)
    lo, hi = grid // 4, grid - grid // 4
    inside = [(lo <= r < hi and lo <= c < hi) or (shape == "square" and r in (lo, hi - 1)) for r in range(grid) for c in range(grid)]
    return tuple(code if i else 0 for i in inside)


def write_synthetic_cpr(out_dir: str, image_size: int = 32, per_kind: int | None = None, seed: int = 0,
                        codes_grid: int | None = None) -> Manifest:
    """One record of each kind per (colour, shape) pair, or ``per_kind`` of each (cycling the pairs).

    ``codes_grid`` stores structured VQ codes with the generation targets (else the trainer VQ-encodes the PNGs;
    a random-weight VQ gives codes that look like noise, which a tiny model learns only slowly)."""
    rng = random.Random(seed)
    os.makedirs(os.path.join(out_dir, "images"), exist_ok=True)
    pairs = [(c, s) for c in COLOURS for s in SHAPES]
    for c, s in pairs:
        draw(c, s, image_size).save(os.path.join(out_dir, "images", f"{c}_{s}.png"))
    n = per_kind or len(pairs)
    records = []
    for i in range(n):
        colour, shape = pairs[i % len(pairs)]
        prompt = f"a {colour} {shape}"
        codes = shape_codes(colour, shape, codes_grid) if codes_grid else None
        image = ImageRef(path=f"images/{colour}_{shape}.png", vq_codes=codes)
        other_colour, other_shape = pairs[(i + 3) % len(pairs)]
        loser = ImageRef(path=f"images/{other_colour}_{other_shape}.png")
        score = 10 if (other_colour, other_shape) == (colour, shape) else 2
        meta = dict(category="attribute", prompt=prompt, seed=seed * 1000 + i, provenance={"synthetic": True})
        records += [
            T2IRecord(id=f"t2i-{i}", image=image, score=9, **meta),
            CaptionRecord(id=f"cap-{i}", image=image, **meta),
            JudgementRecord(id=f"jud-{i}", image=loser, score=score,
                            reasoning=f"The image shows a {other_colour} {other_shape}.", **meta),
            ReflectionRecord(id=f"ref-{i}", loser_image=loser, winner_image=image, loser_score=score,
                             winner_score=9 if score < 9 else 10, **meta),
            TextRecord(id=f"txt-{i}", instruction=f"Propose a text-to-image prompt about a {shape} in {colour}.",
                       response=prompt, **meta),
        ]
    rng.shuffle(records)
    return write_dataset(out_dir, records, shard_size=max(1, len(records) // 2), source_model="synthetic", seed=seed)
