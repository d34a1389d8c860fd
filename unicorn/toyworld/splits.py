"""Compositional train / val / test splits of the toy world.

A prompt is built around a few *combinations* (below, per category): the colour+shape of each object in an
attribute prompt, the count, colour and shape of each counted kind, the shape pair of each spatial relation, and so on. Every
combination belongs to exactly one split, so a val or test prompt asks for combinations that no train scene ever
contains (each colour, shape, count or relation on its own does occur in training): a compositional split, not new
jitter of the same prompts. ``sampler.sample_scene(category, rng, split)`` only draws scenes whose every combination
is in ``split``; ``val`` is for choosing (checkpoints, settings), ``test`` for reporting.

The assignment is a pure function of the combination: within each group of a category's combinations (listed by
``universe``), the members are ranked by a sha256 of their text; the first ``round(10 %)`` (at least 1) go to val,
the next as many to test, the rest to train. It does not depend on the process, the seed or the order of calls;
adding a value to the world (a colour, a word) reassigns the groups that contain it.

    category     one combination per ...                          groups (members: val / test each)
    attribute    object: (colour, shape)                           1 (32: 3 / 3)
    counting     counted kind: (count, colour, shape)              per count 1-6 (32: 3 / 3)
    spatial      relation: (axis, left/top shape, right/bottom)     per axis (16: 2 / 2)
    interaction  relation: inside (inner, outer shape); touching    per relation (inside 8: 1 / 1;
                 (unordered shape pair)                             touching 6: 1 / 1)
    text         the letter string                                 WORDS (16: 2 / 2); other strings per length
                                                                   (26: 3 / 3, 671: 67 / 67, 17565: 1756 / 1756)
    style        object: (style, colour, shape)                     per style (32: 3 / 3)
    scene        object: (setting, region, colour, shape)           per setting (64: 6 / 6)
    knowledge    the prompt's kind: (colour or its reference,       per set of implicit attributes (48: 5 / 5 ..
                 shape or its reference, count reference or none)   576: 58 / 58)
    imagination  the negation: (count, banned colour) |             per variant (24: 2 / 2; 32: 3 / 3; 32: 3 / 3)
                 (colour, banned shape) | (shape, banned colour)

Counting adds the colour because (count, shape) alone has 24 members, two per held-out split, both of one count:
too few to measure counting with. Combinations are read from the scene spec as the prompt asserts it (free
attributes are never part of one), so two scenes with the same prompt text always share their split.
"""
from __future__ import annotations

import hashlib
import itertools
import string
from functools import cache

from .scene import CATEGORIES, KNOWLEDGE, OBJECT_COLOURS, REGIONS, SHAPES, STYLES, TWO_TONE_SCENES, WORDS, Scene

SPLITS = ("train", "val", "test")
HELD_OUT_FRACTION = 0.1  # of each group, for val and again for test
SALT = "toyworld-split-v1"

Combination = tuple  # (category, group, *values)
COLOURS = tuple(OBJECT_COLOURS)
INSIDE_OUTER = ("circle", "square")  # sampler: an outer shape must hold a centred inner one
TOUCHING_SHAPES = ("circle", "square", "diamond")  # sampler: triangles' slanted sides do not touch


def _letter_strings(length: int) -> list[str]:
    return ["".join(t) for t in itertools.product(string.ascii_uppercase, repeat=length) if "".join(t) not in WORDS]


def _knowledge_groups() -> dict[str, list[Combination]]:
    groups = {}
    for implicit in (s for r in (1, 2, 3) for s in itertools.combinations(("colour", "shape", "count"), r)):
        colours = sorted(KNOWLEDGE["colour"]) if "colour" in implicit else COLOURS
        shapes = sorted(KNOWLEDGE["shape"]) if "shape" in implicit else SHAPES
        counts = sorted(KNOWLEDGE["count"]) if "count" in implicit else (None,)
        group = "+".join(implicit)
        groups[group] = [("knowledge", group, c, s, n) for c in colours for s in shapes for n in counts]
    return groups


@cache
def universe(category: str) -> dict[str, tuple[Combination, ...]]:
    """Every combination a category's prompts can contain, by group."""
    assert category in CATEGORIES, category
    c = category
    if c == "attribute":
        groups = {"colour+shape": [(c, "colour+shape", col, s) for col in COLOURS for s in SHAPES]}
    elif c == "counting":
        # (count, shape) alone has 24 members: 2 per held-out split, both of one count, too few to measure counting
        groups = {f"count{n}": [(c, f"count{n}", n, col, s) for col in COLOURS for s in SHAPES] for n in range(1, 7)}
    elif c == "spatial":
        groups = {axis: [(c, axis, a, b) for a in SHAPES for b in SHAPES] for axis in ("horizontal", "vertical")}
    elif c == "interaction":
        groups = {"inside": [(c, "inside", inner, outer) for inner in SHAPES for outer in INSIDE_OUTER],
                  "touching": [(c, "touching", a, b) for a, b in itertools.combinations_with_replacement(TOUCHING_SHAPES, 2)]}
    elif c == "text":
        groups = {"words": [(c, "words", w) for w in WORDS]}
        groups |= {f"letters{k}": [(c, f"letters{k}", w) for w in _letter_strings(k)] for k in (1, 2, 3)}
    elif c == "style":
        groups = {st: [(c, st, col, s) for col in COLOURS for s in SHAPES] for st in STYLES}
    elif c == "scene":
        groups = {st: [(c, st, r, col, s) for r in REGIONS for col in COLOURS for s in SHAPES] for st in TWO_TONE_SCENES}
    elif c == "knowledge":
        groups = _knowledge_groups()
    else:  # imagination
        groups = {"none-of-colour": [(c, "none-of-colour", n, col) for n in range(2, 5) for col in COLOURS],
                  "colour-not-shape": [(c, "colour-not-shape", col, s) for col in COLOURS for s in SHAPES],
                  "shape-not-colour": [(c, "shape-not-colour", s, col) for s in SHAPES for col in COLOURS]}
    return {g: tuple(members) for g, members in groups.items()}


def _digest(combination: Combination) -> bytes:
    return hashlib.sha256(f"{SALT}:{'|'.join(map(str, combination))}".encode()).digest()


@cache
def _assignment(category: str) -> dict[Combination, str]:
    table = {}
    for members in universe(category).values():
        held = max(1, round(HELD_OUT_FRACTION * len(members)))
        for rank, combo in enumerate(sorted(members, key=_digest)):
            table[combo] = "val" if rank < held else "test" if rank < 2 * held else "train"
    return table


def split_of(combination: Combination) -> str:
    """The split a combination belongs to."""
    try:
        return _assignment(combination[0])[combination]
    except (KeyError, AssertionError):
        raise ValueError(f"{combination!r} is not a combination of the toy world") from None


def in_split(combination: Combination, split: str) -> bool:
    return split_of(combination) == split


def combinations(scene: Scene) -> list[Combination]:
    """The combinations the scene's prompt asserts, as ``universe`` lists them."""
    c, objs = scene.category, scene.objects
    if c == "attribute":
        return [(c, "colour+shape", o.colour, o.shape) for o in objs]
    if c == "counting":
        return [(c, f"count{n}", n, colour, shape) for (colour, shape), n in scene.groups().items()]
    if c == "spatial":
        out = []
        for rel in scene.relations:
            first, second = (rel.subject, rel.object) if rel.relation in ("left of", "above") else (rel.object, rel.subject)
            axis = "horizontal" if rel.relation in ("left of", "right of") else "vertical"
            out.append((c, axis, objs[first].shape, objs[second].shape))
        return out
    if c == "interaction":
        rel = scene.relations[0]
        a, b = objs[rel.subject].shape, objs[rel.object].shape
        if rel.relation == "inside":
            return [(c, "inside", a, b)]
        return [(c, "touching", *sorted((a, b), key=TOUCHING_SHAPES.index))]
    if c == "text":
        word = scene.text.text
        return [(c, "words" if word in WORDS else f"letters{len(word)}", word)]
    if c == "style":
        return [(c, scene.style, o.colour, o.shape) for o in objs]
    if c == "scene":
        return [(c, scene.background.scene, o.region, o.colour, o.shape) for o in objs]
    if c == "knowledge":
        implicit, obj = scene.implicit, objs[0]
        group = "+".join(a for a in ("colour", "shape", "count") if a in implicit)
        return [(c, group, implicit.get("colour", obj.colour), implicit.get("shape", obj.shape), implicit.get("count"))]
    ((attribute, value),) = scene.forbid[0].items()
    obj = objs[0]
    if not obj.asserts("shape") and not obj.asserts("colour"):
        return [(c, "none-of-colour", len(objs), value)]
    if attribute == "shape":
        return [(c, "colour-not-shape", obj.colour, value)]
    return [(c, "shape-not-colour", obj.shape, value)]


def scene_split(scene: Scene) -> str | None:
    """The split of every combination of the scene, or None when they disagree (a hand-made or mutated scene)."""
    splits = {split_of(combo) for combo in combinations(scene)}
    return splits.pop() if len(splits) == 1 else None


def proportions(category: str) -> dict[str, float]:
    """The share of the category's combinations in each split."""
    table = _assignment(category)
    return {s: sum(v == s for v in table.values()) / len(table) for s in SPLITS}


@cache
def assignment_digest() -> str:
    """sha256 of the whole assignment (every combination and its split): recorded with evaluations, so numbers
    measured on different splits are never compared."""
    h = hashlib.sha256()
    for category in CATEGORIES:
        for members in universe(category).values():
            for c in members:
                h.update(f"{c}={split_of(c)};".encode())
    return h.hexdigest()
