"""Seeded samplers: one random scene per prompt category."""
from __future__ import annotations

import random
import string

from .scene import (
    CATEGORIES, HORIZON, KNOWLEDGE, OBJECT_COLOURS, PLAIN_BACKGROUNDS, SHAPES, SIZE_FRACTION, SIZES,
    STYLES, TEXT_BANDS, TWO_TONE_SCENES, WORDS, Background, Relation, Scene, ShapeSpec, TextSpec,
)

GRID = 3  # positions sit on a coarse GRID x GRID lattice of cells, jittered a little
CELL_CENTRES = tuple((i + 0.5) / GRID for i in range(GRID))
JITTER = 0.03
GAP = 0.05  # minimum empty space between two objects' bounding boxes, as a fraction of the image


def sample_scene(category: str, rng: random.Random) -> Scene:
    """A random scene for one of CATEGORIES; the same rng state always gives the same scene."""
    assert category in CATEGORIES, f"{category!r} is not expressible in the toy world"
    return _SAMPLERS[category](rng)


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


def _attribute(rng: random.Random) -> Scene:
    n = rng.choice((1, 1, 2))
    colours = rng.sample(list(OBJECT_COLOURS), n)
    sizes = [rng.choice(SIZES) for _ in range(n)]
    spots = _place(rng, sizes)
    objects = [ShapeSpec(rng.choice(SHAPES), c, s, x, y) for c, s, (x, y) in zip(colours, sizes, spots)]
    return Scene("attribute", objects, _plain_background(rng), mentions_background=rng.random() < 0.3)


def _counting(rng: random.Random) -> Scene:
    n = rng.randint(1, 6)
    colours = rng.sample(list(OBJECT_COLOURS), 2)
    shapes = rng.sample(SHAPES, 2)
    kinds = [(colours[0], shapes[0])] * n
    if rng.random() < 0.4:
        kinds += [(colours[1], shapes[1])] * rng.randint(1, min(2, 8 - n))
    size = rng.choice(("small", "medium"))
    spots = _place(rng, [size] * len(kinds))
    objects = [ShapeSpec(s, c, size, x, y, free=("size",)) for (c, s), (x, y) in zip(kinds, spots)]
    return Scene("counting", objects, _plain_background(rng))


def _spatial(rng: random.Random) -> Scene:
    n = rng.choice((2, 2, 3))
    horizontal = rng.random() < 0.5
    lane = rng.randrange(GRID)
    order = sorted(rng.sample(range(GRID), n))  # increasing column (or row) for objects 0, 1, ...
    cells = [(o, lane) if horizontal else (lane, o) for o in order]
    sizes = [rng.choice(("small", "medium")) for _ in range(n)]
    spots = _place_cells_in_order(rng, cells, sizes)
    colours = rng.sample(list(OBJECT_COLOURS), n)
    objects = [ShapeSpec(rng.choice(SHAPES), c, s, x, y, free=("size",)) for c, s, (x, y) in zip(colours, sizes, spots)]
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


def _interaction(rng: random.Random) -> Scene:
    colours = rng.sample(list(OBJECT_COLOURS), 2)
    if rng.random() < 0.5:  # one shape inside another
        outer = ShapeSpec(rng.choice(("circle", "square")), colours[0], "large",
                          _jittered(rng, 0.5), _jittered(rng, 0.5), free=("size",))
        inner = ShapeSpec(rng.choice(SHAPES), colours[1], "small",
                          round(outer.x + rng.uniform(-0.015, 0.015), 3), round(outer.y + rng.uniform(-0.015, 0.015), 3),
                          free=("size",))
        return Scene("interaction", [outer, inner], _plain_background(rng), [Relation(1, "inside", 0)])
    # side by side, touching; triangles are left out because their sides slant away from each other
    shapes = [rng.choice(("circle", "square", "diamond")) for _ in range(2)]
    sizes = [rng.choice(("medium", "large")) for _ in range(2)]
    width = (SIZE_FRACTION[sizes[0]] + SIZE_FRACTION[sizes[1]]) / 2 - 0.01  # centre to centre, overlapping by 1%
    left_x = 0.5 - width / 2 + rng.uniform(-0.08, 0.08)
    y = rng.uniform(0.3, 0.7)
    objects = [ShapeSpec(shapes[0], colours[0], sizes[0], round(left_x, 3), round(y, 3), free=("size",)),
               ShapeSpec(shapes[1], colours[1], sizes[1], round(left_x + width, 3), round(y, 3), free=("size",))]
    pair = (0, 1) if rng.random() < 0.5 else (1, 0)
    return Scene("interaction", objects, _plain_background(rng), [Relation(pair[0], "touching", pair[1])])


def _text(rng: random.Random) -> Scene:
    word = rng.choice(WORDS) if rng.random() < 0.5 else "".join(rng.choices(string.ascii_uppercase, k=rng.randint(1, 3)))
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


def _style(rng: random.Random) -> Scene:
    n = rng.choice((1, 2))
    colours = rng.sample(list(OBJECT_COLOURS), n)
    spots = _place(rng, ["large"] * n)
    objects = [ShapeSpec(rng.choice(SHAPES), c, "large", x, y, free=("size",)) for c, (x, y) in zip(colours, spots)]
    return Scene("style", objects, _plain_background(rng), style=rng.choice(STYLES))


def _scene(rng: random.Random) -> Scene:
    n = rng.choice((1, 2))
    colours = rng.sample(list(OBJECT_COLOURS), n)
    regions = [rng.choice(("sky", "ground")) for _ in range(n)]
    columns = rng.sample(range(GRID), n)
    objects = []
    for colour, region, col in zip(colours, regions, columns):
        y = HORIZON / 3 if region == "sky" else (1 + HORIZON) / 2
        objects.append(ShapeSpec(rng.choice(SHAPES), colour, rng.choice(("small", "medium")),
                                 _jittered(rng, CELL_CENTRES[col]), _jittered(rng, y), free=("size",), region=region))
    return Scene("scene", objects, Background(scene=rng.choice(list(TWO_TONE_SCENES))), mentions_background=True)


def _knowledge(rng: random.Random) -> Scene:
    implicit_attrs = [a for a in ("colour", "shape", "count") if rng.random() < 0.5] or [rng.choice(("colour", "shape", "count"))]
    implicit = {a: rng.choice(sorted(KNOWLEDGE[a])) for a in implicit_attrs}
    colour = KNOWLEDGE["colour"][implicit["colour"]][0] if "colour" in implicit else rng.choice(list(OBJECT_COLOURS))
    shape = KNOWLEDGE["shape"][implicit["shape"]][0] if "shape" in implicit else rng.choice(SHAPES)
    n = KNOWLEDGE["count"][implicit["count"]][0] if "count" in implicit else 1
    size = rng.choice(("small", "medium"))
    objects = [ShapeSpec(shape, colour, size, x, y, free=("size",)) for x, y in _place(rng, [size] * n)]
    return Scene("knowledge", objects, _plain_background(rng), implicit=implicit)


def _imagination(rng: random.Random) -> Scene:
    variant = rng.randrange(3)
    banned_colour = rng.choice(list(OBJECT_COLOURS))
    banned_shape = rng.choice(SHAPES)
    if variant == 0:  # "three shapes, none of them red"
        n = rng.randint(2, 4)
        colours = [rng.choice([c for c in OBJECT_COLOURS if c != banned_colour]) for _ in range(n)]
        shapes = [rng.choice(SHAPES) for _ in range(n)]
        free, forbid = ("colour", "shape", "size"), [{"colour": banned_colour}]
    elif variant == 1:  # "a blue shape that is not a circle"
        n, colours = 1, [rng.choice(list(OBJECT_COLOURS))]
        shapes = [rng.choice([s for s in SHAPES if s != banned_shape])]
        free, forbid = ("shape", "size"), [{"shape": banned_shape}]
    else:  # "a square that is not red"
        n, shapes = 1, [rng.choice(SHAPES)]
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
