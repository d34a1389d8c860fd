"""Ways an image can go wrong: generator-like degradations, and scenes that are wrong on purpose.

Degradations (noise, jitter, blur, colour drift) should not change what the oracle measures;
mutations (a wrong colour, count, relation, ...) must. Both are used by the tests and by anyone
calibrating the oracle against a real generator.
"""
from __future__ import annotations

import random

import numpy as np
from PIL import Image, ImageFilter

from .sampler import CELL_CENTRES, _separated
from .scene import KNOWLEDGE, OBJECT_COLOURS, PLAIN_BACKGROUNDS, SHAPES, SIZES, TWO_TONE_SCENES, Scene, ShapeSpec


def add_noise(rgb: np.ndarray, sigma: float, rng: np.random.Generator) -> np.ndarray:
    noisy = rgb.astype(np.float32) + rng.normal(0.0, sigma, rgb.shape)
    return np.clip(noisy, 0, 255).round().astype(np.uint8)


def shift(rgb: np.ndarray, dx: int, dy: int) -> np.ndarray:
    """Translate by whole pixels, repeating the edge rows / columns."""
    h, w, _ = rgb.shape
    ys = np.clip(np.arange(h) - dy, 0, h - 1)
    xs = np.clip(np.arange(w) - dx, 0, w - 1)
    return rgb[ys][:, xs]


def blur(rgb: np.ndarray, radius: float) -> np.ndarray:
    return np.asarray(Image.fromarray(rgb).filter(ImageFilter.GaussianBlur(radius)))


def colour_drift(rgb: np.ndarray, offset: tuple[float, float, float]) -> np.ndarray:
    return np.clip(rgb.astype(np.float32) + np.array(offset, np.float32), 0, 255).round().astype(np.uint8)


def degrade(rgb: np.ndarray, rng: np.random.Generator, strength: float = 1.0) -> np.ndarray:
    """A generator-like rendition: slight blur, colour drift, jitter and noise (strength 1 = moderate)."""
    out = blur(rgb, 0.6 * strength) if strength > 0 else rgb
    out = colour_drift(out, tuple(rng.uniform(-12, 12, 3) * strength))
    out = shift(out, *(int(v) for v in rng.integers(-2, 3, 2)))
    return add_noise(out, 10.0 * strength, rng)


MUTATIONS = ("colour", "shape", "size", "count", "relation", "text", "style", "background", "forbidden", "implied")
KEY_MUTATIONS = {  # the error each category's rubric weighs most
    "attribute": ("colour", "shape"), "counting": ("count",), "spatial": ("relation",), "interaction": ("relation",),
    "text": ("text",), "style": ("style",), "scene": ("background",), "knowledge": ("implied",),
    "imagination": ("forbidden",),
}


def mutate(scene: Scene, kind: str, rng: random.Random) -> Scene:
    """A copy of the scene that is wrong in one way; render it and judge it against the original."""
    wrong = Scene.from_dict(scene.to_dict())
    objs = wrong.objects
    if kind == "colour":
        i = rng.choice([i for i, o in enumerate(objs) if o.asserts("colour")])
        objs[i].colour = rng.choice([c for c in OBJECT_COLOURS if c not in {o.colour for o in objs}])
    elif kind == "shape":
        i = rng.choice([i for i, o in enumerate(objs) if o.asserts("shape")])
        taken = {o.shape for o in objs if o.colour == objs[i].colour}
        objs[i].shape = rng.choice([s for s in SHAPES if s not in taken])
    elif kind == "size":
        i = rng.choice([i for i, o in enumerate(objs) if o.asserts("size")])
        objs[i].size = rng.choice([s for s in SIZES if s != objs[i].size])
    elif kind == "count":
        _change_count(wrong, rng)
    elif kind == "relation":
        _break_relation(wrong, rng)
    elif kind == "text":
        t = wrong.text
        i = rng.randrange(len(t.text))
        letter = rng.choice([c for c in "ABCDEFGHIJKLMNOPQRSTUVWXYZ" if c != t.text[i]])
        t.text = t.text[:i] + letter + t.text[i + 1:]
    elif kind == "style":
        wrong.style = "outline" if wrong.style == "filled" else "filled"
    elif kind == "background":
        bg = wrong.background
        if bg.scene:
            bg.scene = next(s for s in TWO_TONE_SCENES if s != bg.scene)
        else:
            bg.colour = rng.choice([c for c in PLAIN_BACKGROUNDS if c != bg.colour])
    elif kind == "forbidden":
        ((attribute, value),) = wrong.forbid[0].items()
        setattr(objs[rng.randrange(len(objs))], attribute, value)
    elif kind == "implied":
        attribute = rng.choice(sorted(wrong.implicit))
        if attribute == "count":
            _change_count(wrong, rng)
        else:
            value = KNOWLEDGE[attribute][wrong.implicit[attribute]][0]
            choices = OBJECT_COLOURS if attribute == "colour" else SHAPES
            new = rng.choice([v for v in choices if v != value])
            for o in objs:
                setattr(o, attribute, new)
    else:
        raise ValueError(kind)
    return Scene.from_dict(wrong.to_dict())  # re-validates


def _change_count(scene: Scene, rng: random.Random) -> None:
    """One object of the first kind more (where there is room) or one fewer."""
    objs = scene.objects
    first = [o for o in objs if (o.colour, o.shape) == (objs[0].colour, objs[0].shape)]
    spots = [(x, y) for x in CELL_CENTRES for y in CELL_CENTRES]
    rng.shuffle(spots)
    free = [p for p in spots if all(_separated((*p, objs[0].size), (o.x, o.y, o.size)) for o in objs)]
    if free and (len(first) == 1 or rng.random() < 0.5):
        x, y = free[0]
        objs.append(ShapeSpec(objs[0].shape, objs[0].colour, objs[0].size, round(x, 3), round(y, 3), objs[0].free))
    else:
        assert len(first) > 1, "nowhere to add an object and none to remove"
        objs.remove(first[-1])


def _break_relation(scene: Scene, rng: random.Random) -> None:
    rel = rng.choice(scene.relations)
    a, b = scene.objects[rel.subject], scene.objects[rel.object]
    if rel.relation == "touching":  # pull them apart, keeping both in the image
        left, right = (a, b) if a.x < b.x else (b, a)
        left.x, right.x = round(max(0.16, left.x - 0.08), 3), round(min(0.84, right.x + 0.08), 3)
    elif rel.relation == "inside":  # move the inner shape out to a corner
        a.x, a.y = rng.choice(((0.1, 0.1), (0.9, 0.1), (0.1, 0.9), (0.9, 0.9)))
    else:  # spatial: swap the two positions
        a.x, b.x, a.y, b.y = b.x, a.x, b.y, a.y
