"""Seeded samplers: one random scene per prompt category, within one split (splits.py).

Each sampler draws the values that make up its category's combinations only among those of the requested split,
so a train scene never contains a val or test combination, and the structure of a scene (how many objects, which
variant) keeps its distribution wherever the split allows it.
"""
from __future__ import annotations

import random
import string

from .scene import (
    CATEGORIES, HORIZON, KNOWLEDGE, OBJECT_COLOURS, PLAIN_BACKGROUNDS, SHAPES, SIZE_FRACTION, SIZES,
    STYLES, TEXT_BANDS, TWO_TONE_SCENES, WORDS, Background, Relation, Scene, ShapeSpec, TextSpec,
)
from .splits import INSIDE_OUTER, SPLITS, TOUCHING_SHAPES, in_split, scene_split

GRID = 3  # positions sit on a coarse GRID x GRID lattice of cells, jittered a little
CELL_CENTRES = tuple((i + 0.5) / GRID for i in range(GRID))
JITTER = 0.03
GAP = 0.05  # minimum empty space between two objects' bounding boxes, as a fraction of the image
MAX_TRIES = 1000


class _Infeasible(Exception):
    """The structure drawn so far has no completion inside the split: draw again."""


def sample_scene(category: str, rng: random.Random, split: str = "train") -> Scene:
    """A random scene for one of CATEGORIES whose every combination is in ``split`` (train | val | test); the same
    rng state always gives the same scene."""
    assert category in CATEGORIES, f"{category!r} is not expressible in the toy world"
    assert split in SPLITS, f"split must be one of {', '.join(SPLITS)}, got {split!r}"
    for _ in range(MAX_TRIES):
        try:
            scene = _SAMPLERS[category](rng, split)
        except _Infeasible:
            continue
        assert scene_split(scene) == split, (scene, split)
        return scene
    raise RuntimeError(f"no {category} scene in split {split!r} after {MAX_TRIES} tries")


def _pick(rng: random.Random, options, ok):
    """rng.choice over the options that pass ``ok``."""
    options = [o for o in options if ok(o)]
    if not options:
        raise _Infeasible
    return rng.choice(options)


def _jittered(rng: random.Random, centre: float) -> float:
    return round(centre + rng.uniform(-JITTER, JITTER), 3)


def _within(spot: tuple[float, float, str]) -> tuple[float, float, str]:
    """Pull a centre in so the whole object stays at least GAP / 2 inside the image."""
    lo = SIZE_FRACTION[spot[2]] / 2 + GAP / 2
    return round(min(max(spot[0], lo), 1 - lo), 3), round(min(max(spot[1], lo), 1 - lo), 3), spot[2]


def _separated(a: tuple[float, float, str], b: tuple[float, float, str]) -> bool:
    need = (SIZE_FRACTION[a[2]] + SIZE_FRACTION[b[2]]) / 2 + GAP
    return max(abs(a[0] - b[0]), abs(a[1] - b[1])) >= need


def _place(rng: random.Random, sizes: list[str], cells: list[tuple[int, int]] | None = None) -> list[tuple[float, float]]:
    """Distinct grid cells for objects of the given sizes, far enough apart never to touch."""
    cells = cells or [(c, r) for r in range(GRID) for c in range(GRID)]
    for _ in range(200):
        chosen = rng.sample(cells, len(sizes))
        spots = [_within((_jittered(rng, CELL_CENTRES[c]), _jittered(rng, CELL_CENTRES[r]), s)) for (c, r), s in zip(chosen, sizes)]
        if all(_separated(spots[i], spots[j]) for i in range(len(spots)) for j in range(i)):
            return [(x, y) for x, y, _ in spots]
    raise ValueError(f"cannot place {sizes} apart on a {GRID}x{GRID} grid")


def _plain_background(rng: random.Random) -> Background:
    return Background(colour=rng.choice(PLAIN_BACKGROUNDS))


def _attribute(rng: random.Random, split: str) -> Scene:
    n = rng.choice((1, 1, 2))
    kinds: list[tuple[str, str]] = []  # (colour, shape), colours distinct
    for _ in range(n):
        kinds.append(_pick(rng, [(c, s) for c in OBJECT_COLOURS for s in SHAPES],
                           lambda k: k[0] not in {c for c, _ in kinds} and in_split(("attribute", "colour+shape", *k), split)))
    sizes = [rng.choice(SIZES) for _ in range(n)]
    spots = _place(rng, sizes)
    objects = [ShapeSpec(s, c, z, x, y) for (c, s), z, (x, y) in zip(kinds, sizes, spots)]
    return Scene("attribute", objects, _plain_background(rng), mentions_background=rng.random() < 0.3)


def _counting(rng: random.Random, split: str) -> Scene:
    n = rng.randint(1, 6)
    colour, shape = _pick(rng, [(c, s) for c in OBJECT_COLOURS for s in SHAPES],
                          lambda k: in_split(("counting", f"count{n}", n, *k), split))
    kinds = [(colour, shape)] * n
    if rng.random() < 0.4:  # a distractor kind of another colour and shape, when the split has one that fits
        options = [(m, c, s) for m in range(1, min(2, 8 - n) + 1) for c in OBJECT_COLOURS for s in SHAPES
                   if c != colour and s != shape and in_split(("counting", f"count{m}", m, c, s), split)]
        if options:
            m, c, s = rng.choice(options)
            kinds += [(c, s)] * m
    size = rng.choice(("small", "medium"))
    spots = _place(rng, [size] * len(kinds))
    objects = [ShapeSpec(s, c, size, x, y, free=("size",)) for (c, s), (x, y) in zip(kinds, spots)]
    return Scene("counting", objects, _plain_background(rng))


def _spatial(rng: random.Random, split: str) -> Scene:
    n = rng.choice((2, 2, 3))
    horizontal = rng.random() < 0.5
    axis = "horizontal" if horizontal else "vertical"
    lane = rng.randrange(GRID)
    order = sorted(rng.sample(range(GRID), n))  # increasing column (or row) for objects 0, 1, ...
    cells = [(o, lane) if horizontal else (lane, o) for o in order]
    sizes = [rng.choice(("small", "medium")) for _ in range(n)]
    spots = _place_cells_in_order(rng, cells, sizes)
    colours = rng.sample(list(OBJECT_COLOURS), n)
    # each neighbouring pair (left/top shape, right/bottom shape) is one combination
    shapes = [_pick(rng, SHAPES, lambda a: any(in_split(("spatial", axis, a, b), split) for b in SHAPES))]
    for _ in range(n - 1):
        shapes.append(_pick(rng, SHAPES, lambda b: in_split(("spatial", axis, shapes[-1], b), split)))
    objects = [ShapeSpec(sh, c, s, x, y, free=("size",)) for sh, c, s, (x, y) in zip(shapes, colours, sizes, spots)]
    relations = []
    for i in range(n - 1):
        forward = rng.random() < 0.5  # "A left of B" or, the same fact, "B right of A"
        rel = ("left of", "right of") if horizontal else ("above", "below")
        relations.append(Relation(i, rel[0], i + 1) if forward else Relation(i + 1, rel[1], i))
    return Scene("spatial", objects, _plain_background(rng), relations)


def _place_cells_in_order(rng, cells, sizes):
    for _ in range(200):
        spots = [_within((_jittered(rng, CELL_CENTRES[c]), _jittered(rng, CELL_CENTRES[r]), s)) for (c, r), s in zip(cells, sizes)]
        if all(_separated(spots[i], spots[j]) for i in range(len(spots)) for j in range(i)):
            return [(x, y) for x, y, _ in spots]
    raise ValueError("cannot place the cells apart")


def _interaction(rng: random.Random, split: str) -> Scene:
    colours = rng.sample(list(OBJECT_COLOURS), 2)
    if rng.random() < 0.5:  # one shape inside another
        inner_shape, outer_shape = _pick(rng, [(i, o) for i in SHAPES for o in INSIDE_OUTER],
                                         lambda k: in_split(("interaction", "inside", *k), split))
        outer = ShapeSpec(outer_shape, colours[0], "large", _jittered(rng, 0.5), _jittered(rng, 0.5), free=("size",))
        inner = ShapeSpec(inner_shape, colours[1], "small",
                          round(outer.x + rng.uniform(-0.015, 0.015), 3), round(outer.y + rng.uniform(-0.015, 0.015), 3),
                          free=("size",))
        return Scene("interaction", [outer, inner], _plain_background(rng), [Relation(1, "inside", 0)])
    # side by side, touching; triangles are left out because their sides slant away from each other
    shapes = _pick(rng, [(a, b) for a in TOUCHING_SHAPES for b in TOUCHING_SHAPES],
                   lambda k: in_split(("interaction", "touching", *sorted(k, key=TOUCHING_SHAPES.index)), split))
    sizes = [rng.choice(("medium", "large")) for _ in range(2)]
    width = (SIZE_FRACTION[sizes[0]] + SIZE_FRACTION[sizes[1]]) / 2 - 0.01  # centre to centre, overlapping by 1%
    left_x = 0.5 - width / 2 + rng.uniform(-0.08, 0.08)
    y = rng.uniform(0.3, 0.7)
    objects = [ShapeSpec(shapes[0], colours[0], sizes[0], round(left_x, 3), round(y, 3), free=("size",)),
               ShapeSpec(shapes[1], colours[1], sizes[1], round(left_x + width, 3), round(y, 3), free=("size",))]
    pair = (0, 1) if rng.random() < 0.5 else (1, 0)
    return Scene("interaction", objects, _plain_background(rng), [Relation(pair[0], "touching", pair[1])])


def _text(rng: random.Random, split: str) -> Scene:
    if rng.random() < 0.5:
        word = _pick(rng, WORDS, lambda w: in_split(("text", "words", w), split))
    else:  # random letters: about one draw in ten is a held-out string, so draw until one is in the split
        k = rng.randint(1, 3)
        for _ in range(MAX_TRIES):
            word = "".join(rng.choices(string.ascii_uppercase, k=k))
            if word not in WORDS and in_split(("text", f"letters{k}", word), split):
                break
        else:
            raise _Infeasible
    colours = rng.sample(list(OBJECT_COLOURS), 2)
    band = rng.randrange(len(TEXT_BANDS))
    objects = []
    if rng.random() < 0.5:  # a shape in another band
        row = rng.choice([r for r in range(GRID) if r != band])
        col = rng.randrange(GRID)
        objects.append(ShapeSpec(rng.choice(SHAPES), colours[1], "medium",
                                 _jittered(rng, CELL_CENTRES[col]), _jittered(rng, CELL_CENTRES[row]), free=("size",)))
    text = TextSpec(word, colours[0], TEXT_BANDS[band])
    return Scene("text", objects, _plain_background(rng), text=text, mentions_background=rng.random() < 0.3)


def _style(rng: random.Random, split: str) -> Scene:
    n = rng.choice((1, 2))
    style = rng.choice(STYLES)
    kinds: list[tuple[str, str]] = []
    for _ in range(n):
        kinds.append(_pick(rng, [(c, s) for c in OBJECT_COLOURS for s in SHAPES],
                           lambda k: k[0] not in {c for c, _ in kinds} and in_split(("style", style, *k), split)))
    spots = _place(rng, ["large"] * n)
    objects = [ShapeSpec(s, c, "large", x, y, free=("size",)) for (c, s), (x, y) in zip(kinds, spots)]
    return Scene("style", objects, _plain_background(rng), style=style)


def _scene(rng: random.Random, split: str) -> Scene:
    n = rng.choice((1, 2))
    setting = rng.choice(list(TWO_TONE_SCENES))
    kinds: list[tuple[str, str, str]] = []  # (region, colour, shape), colours distinct
    for _ in range(n):
        kinds.append(_pick(rng, [(r, c, s) for r in ("sky", "ground") for c in OBJECT_COLOURS for s in SHAPES],
                           lambda k: k[1] not in {c for _, c, _ in kinds} and in_split(("scene", setting, *k), split)))
    columns = rng.sample(range(GRID), n)
    objects = []
    for (region, colour, shape), col in zip(kinds, columns):
        y = HORIZON / 3 if region == "sky" else (1 + HORIZON) / 2
        objects.append(ShapeSpec(shape, colour, rng.choice(("small", "medium")),
                                 _jittered(rng, CELL_CENTRES[col]), _jittered(rng, y), free=("size",), region=region))
    return Scene("scene", objects, Background(scene=setting), mentions_background=True)


def _knowledge(rng: random.Random, split: str) -> Scene:
    implicit_attrs = [a for a in ("colour", "shape", "count") if rng.random() < 0.5] or [rng.choice(("colour", "shape", "count"))]
    group = "+".join(implicit_attrs)
    colours = sorted(KNOWLEDGE["colour"]) if "colour" in implicit_attrs else list(OBJECT_COLOURS)
    shapes = sorted(KNOWLEDGE["shape"]) if "shape" in implicit_attrs else list(SHAPES)
    counts = sorted(KNOWLEDGE["count"]) if "count" in implicit_attrs else [None]
    c, s, k = _pick(rng, [(c, s, k) for c in colours for s in shapes for k in counts],
                    lambda v: in_split(("knowledge", group, *v), split))
    implicit = {a: v for a, v in zip(("colour", "shape", "count"), (c, s, k)) if a in implicit_attrs}
    colour = KNOWLEDGE["colour"][c][0] if "colour" in implicit else c
    shape = KNOWLEDGE["shape"][s][0] if "shape" in implicit else s
    n = KNOWLEDGE["count"][k][0] if "count" in implicit else 1
    size = rng.choice(("small", "medium"))
    objects = [ShapeSpec(shape, colour, size, x, y, free=("size",)) for x, y in _place(rng, [size] * n)]
    return Scene("knowledge", objects, _plain_background(rng), implicit=implicit)


def _imagination(rng: random.Random, split: str) -> Scene:
    variant = rng.randrange(3)
    if variant == 0:  # "three shapes, none of them red"
        n, banned_colour = _pick(rng, [(n, c) for n in range(2, 5) for c in OBJECT_COLOURS],
                                 lambda v: in_split(("imagination", "none-of-colour", *v), split))
        colours = [rng.choice([c for c in OBJECT_COLOURS if c != banned_colour]) for _ in range(n)]
        shapes = [rng.choice(SHAPES) for _ in range(n)]
        free, forbid = ("colour", "shape", "size"), [{"colour": banned_colour}]
    elif variant == 1:  # "a blue shape that is not a circle"
        colour, banned_shape = _pick(rng, [(c, s) for c in OBJECT_COLOURS for s in SHAPES],
                                     lambda v: in_split(("imagination", "colour-not-shape", *v), split))
        n, colours = 1, [colour]
        shapes = [rng.choice([s for s in SHAPES if s != banned_shape])]
        free, forbid = ("shape", "size"), [{"shape": banned_shape}]
    else:  # "a square that is not red"
        shape, banned_colour = _pick(rng, [(s, c) for s in SHAPES for c in OBJECT_COLOURS],
                                     lambda v: in_split(("imagination", "shape-not-colour", *v), split))
        n, shapes = 1, [shape]
        colours = [rng.choice([c for c in OBJECT_COLOURS if c != banned_colour])]
        free, forbid = ("colour", "size"), [{"colour": banned_colour}]
    sizes = [rng.choice(("small", "medium")) for _ in range(n)]
    objects = [ShapeSpec(s, c, z, x, y, free=free) for s, c, z, (x, y) in zip(shapes, colours, sizes, _place(rng, sizes))]
    return Scene("imagination", objects, _plain_background(rng), forbid=forbid)


_SAMPLERS = {
    "attribute": _attribute, "counting": _counting, "spatial": _spatial, "interaction": _interaction,
    "text": _text, "style": _style, "scene": _scene, "knowledge": _knowledge, "imagination": _imagination,
}
assert set(_SAMPLERS) == set(CATEGORIES)
