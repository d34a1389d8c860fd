"""The oracle: measures by pixel analysis what an image gets right about its scene spec.

`judge(scene, image)` segments the image (segment.py), reads any text (font.py), matches the
detected blobs to the objects the prompt asks for, checks every criterion, and scores it 0-10 with
the category's rubric (rubrics.py; method.md section 2). It also answers the
UniCycle questions of questions.py from the pixels, so a model's answers can be graded exactly.
"""
from __future__ import annotations

import math
from dataclasses import asdict, dataclass, field

import numpy as np

from .font import read_text
from .questions import Question
from .render import horizon_row
from .rubrics import RUBRICS
from .scene import HORIZON, TEXT_BAND_CENTRE, TWO_TONE_SCENES, Scene, ShapeSpec
from .segment import PALETTE, PALETTE_NAMES, Analysis, Blob, analyse, dilate, fill_holes, mixture_mask

# Criteria over several objects score only when all are right: an image with one of two relations
# wrong must not pass the acceptance bar (>= 8). The report keeps the fractions.
ALL_OR_NOTHING = frozenset({"colours", "shapes", "sizes", "objects", "relations", "style", "regions", "implied"})
RELATION_MARGIN = 0.08  # "left of" needs the centres this far apart (fraction of the image)
TOUCH_PIXELS = 2  # blobs this close count as touching (blur and noise eat the seam between them)
CLEAN_UNKNOWN_FRACTION = (0.10, 0.30)  # off-palette pixels: full marks up to the first, none from the second
MATCH_WEIGHTS = {"colour": 4.0, "shape": 2.0, "size": 1.0}


@dataclass
class Reading:
    """What the oracle sees: shape blobs, text, background."""
    analysis: Analysis
    blobs: list[Blob]  # blobs that are shapes (letters removed)
    text: str
    text_colour: str | None
    text_centre_y: float | None  # fraction of the image height


@dataclass
class OracleReport:
    category: str
    score: int  # 0-10, the rubric total rounded
    raw_score: float
    points: dict[str, float]  # rubric criterion -> points earned
    criteria: dict[str, float]  # every measured criterion, each in [0, 1]
    detected: list[dict]  # colour, shape, size, style, x, y of each shape blob
    text_read: str
    answers: dict[str, str] = field(default_factory=dict)  # question id -> the oracle's answer

    def to_dict(self) -> dict:
        return asdict(self)


def read_image(scene: Scene, image) -> Reading:
    """Segment the image and separate the letters (of the spec's text colour, or failing that any
    colour the prompt gives no shape) from the shapes."""
    analysis = analyse(image)
    text, text_colour, centre_y = "", None, None
    if scene.text is not None:
        shape_colours = {o.colour for o in scene.objects}
        candidates = [scene.text.colour] + sorted({b.colour for b in analysis.blobs} - shape_colours - {scene.text.colour})
        for colour in candidates:
            mask = _text_mask(analysis, colour, shape_colours)
            read = read_text(mask)
            if read and (not text or read == scene.text.text):
                text, text_colour = read, colour
                ys = np.nonzero(mask)[0]
                centre_y = float((ys.min() + ys.max() + 1) / 2 / analysis.image_size)
            if text == scene.text.text:
                break
    blobs = [b for b in analysis.blobs if b.colour != text_colour]
    return Reading(analysis, blobs, text, text_colour, centre_y)


def _text_mask(analysis: Analysis, colour: str, shape_colours: set[str]) -> np.ndarray:
    """Pixels of the text colour, or blurred part-way towards it from the background, away from shapes
    of other colours (a blurred orange edge on black looks brown, and so do blurred orange letters:
    blobs that are mostly such a mixture, in a colour the prompt gives no shape, count as text)."""
    exact = analysis.classes == PALETTE_NAMES.index(colour)
    mixed = np.zeros_like(exact)
    horizon = horizon_row(analysis.image_size)
    for rows, backdrop in ((slice(0, horizon), analysis.sky), (slice(horizon, None), analysis.ground)):
        if backdrop is not None and backdrop != colour:
            mixed[rows] = mixture_mask(analysis.rgb[rows], PALETTE[PALETTE_NAMES.index(colour)], PALETTE[PALETTE_NAMES.index(backdrop)])
    others = [b for b in analysis.blobs if b.colour != colour]
    shapes = [b for b in others
              if b.colour in shape_colours or _full_mask(b, analysis.image_size)[mixed].sum() < 0.5 * b.area]
    return _despeckle((exact | mixed) & ~dilate(_union_mask(shapes, analysis.image_size), 2))


def _despeckle(mask: np.ndarray) -> np.ndarray:
    """Drop pixels with fewer than two 8-neighbours in the mask (noise), keeping thin letter strokes,
    whose parts may touch only at corners (the reason letters are not read from 4-connected blobs)."""
    p = np.pad(mask, 1).astype(np.int8)
    neighbours = sum(p[1 + dy:p.shape[0] - 1 + dy, 1 + dx:p.shape[1] - 1 + dx]
                     for dy in (-1, 0, 1) for dx in (-1, 0, 1) if dy or dx)
    return mask & (neighbours >= 2)


def judge(scene: Scene, image, questions: list[Question] | None = None) -> OracleReport:
    """Score an image against its scene spec, and answer the given questions from its pixels."""
    reading = read_image(scene, image)
    criteria = measure(scene, reading)
    rubric = RUBRICS[scene.category]
    points = {name: weight * (float(criteria[name] == 1.0) if name in ALL_OR_NOTHING else criteria[name])
              for name, weight in rubric.items()}
    raw = sum(points.values())
    detected = [dict(colour=b.colour, shape=b.shape, size=b.size, style=b.style, x=round(b.cx, 3), y=round(b.cy, 3))
                for b in reading.blobs]
    answers = {q.id: answer(q.query, reading) for q in questions or []}
    return OracleReport(scene.category, math.floor(raw + 0.5), round(raw, 3), points, criteria, detected, reading.text, answers)


def measure(scene: Scene, reading: Reading) -> dict[str, float]:
    """Every criterion of every rubric that applies to the scene, each in [0, 1]."""
    objs, blobs = scene.objects, reading.blobs
    match = match_objects(objs, blobs)
    analysis = reading.analysis

    def fraction(attribute: str) -> float:
        judged = [i for i, o in enumerate(objs) if o.asserts(attribute)]
        right = [i for i in judged if i in match and getattr(blobs[match[i]], attribute) == getattr(objs[i], attribute)]
        return len(right) / len(judged) if judged else 1.0

    c: dict[str, float] = {
        "colours": fraction("colour"), "shapes": fraction("shape"), "sizes": fraction("size"),
        "found": len(match) / len(objs) if objs else 1.0,
    }
    c["objects"] = (sum(i in match and _agrees(o, blobs[match[i]], ("colour", "shape")) for i, o in enumerate(objs)) / len(objs)
                    if objs else 1.0)
    c["count"] = float(all(count_kind(blobs, colour, shape, scene) == n for (colour, shape), n in scene.groups().items()))
    c["relations"] = (sum(_relation_holds(r.relation, blobs[match[r.subject]], blobs[match[r.object]], analysis.image_size)
                          if r.subject in match and r.object in match else False for r in scene.relations) / len(scene.relations)
                      if scene.relations else 1.0)
    c["style"] = sum(i in match and blobs[match[i]].style == scene.style for i in range(len(objs))) / len(objs) if objs else 1.0
    placed = [i for i, o in enumerate(objs) if o.region]
    c["regions"] = (sum(i in match and _region(blobs[match[i]]) == objs[i].region for i in placed) / len(placed)) if placed else 1.0
    sky, ground = scene.background.sky_and_ground
    c["background"] = float(analysis.sky == sky and analysis.ground == ground)
    c["negation"] = float(not any(_violates(b, rule) for b in blobs for rule in scene.forbid)) * c["found"]
    c["implied"] = float(np.mean([{"colour": c["colours"], "shape": c["shapes"], "count": c["count"]}[a] for a in scene.implicit])
                         if scene.implicit else 1.0)
    c["no_extra"] = float(len(blobs) == len(match))
    lo, hi = CLEAN_UNKNOWN_FRACTION
    c["clean_pixels"] = float(np.clip((hi - analysis.unknown_fraction) / (hi - lo), 0.0, 1.0))
    quality_parts = [c["no_extra"], c["clean_pixels"]] + ([c["background"]] if scene.mentions_background else [])
    c["quality"] = float(np.mean(quality_parts)) if match or not objs else 0.0
    if scene.text is not None:
        want, got = scene.text.text, reading.text
        same = sum(a == b for a, b in zip(want, got)) / max(len(want), len(got))
        c["spelling"] = 1.0 if got == want else 0.5 * same
        c["placement"] = float(reading.text_centre_y is not None and _band(reading.text_centre_y) == scene.text.band)
        c["text_colour"] = float(reading.text_colour == scene.text.colour)
        rest = [c["text_colour"], c["no_extra"]] + ([c["objects"]] if objs else []) + ([c["background"]] if scene.mentions_background else [])
        c["rest"] = float(np.mean(rest)) if got else 0.0
    if scene.category == "imagination":
        c["objects"] = (c["objects"] + c["count"]) / 2
    return c


def match_objects(objs: list[ShapeSpec], blobs: list[Blob]) -> dict[int, int]:
    """Expected object index -> blob index, greedily by agreement on the asserted attributes
    (ties to the nearer blob); a pair must agree on at least one asserted attribute."""
    pairs = []
    for i, o in enumerate(objs):
        asserted = [a for a in MATCH_WEIGHTS if o.asserts(a)]
        for j, b in enumerate(blobs):
            score = sum(MATCH_WEIGHTS[a] for a in asserted if getattr(b, a) == getattr(o, a))
            if score > 0 or not asserted:
                pairs.append((-score, (o.x - b.cx) ** 2 + (o.y - b.cy) ** 2, i, j))
    match: dict[int, int] = {}
    used: set[int] = set()
    for _, _, i, j in sorted(pairs):
        if i not in match and j not in used:
            match[i] = j
            used.add(j)
    return match


def count_kind(blobs: list[Blob], colour: str | None, shape: str | None, scene: Scene) -> int:
    """How many blobs are of one counted kind. By colour alone when no other counted kind shares it
    (colour survives a poor image far better than shape), else by colour and shape."""
    by_colour_only = colour is not None and sum(c == colour for c, _ in scene.groups()) == 1

    def counted(b: Blob) -> bool:
        if colour is not None and b.colour != colour:
            return False
        return by_colour_only or shape is None or b.shape == shape
    return sum(map(counted, blobs))


def _agrees(o: ShapeSpec, b: Blob, attributes) -> bool:
    return all(getattr(b, a) == getattr(o, a) for a in attributes if o.asserts(a))


def _violates(b: Blob, rule: dict[str, str]) -> bool:
    return all(getattr(b, a) == v for a, v in rule.items())


def _region(b: Blob) -> str:
    return "sky" if b.cy < HORIZON else "ground"


def _band(y: float) -> str:
    return min(TEXT_BAND_CENTRE, key=lambda band: abs(TEXT_BAND_CENTRE[band] - y))


def _full_mask(b: Blob, size: int) -> np.ndarray:
    full = np.zeros((size, size), dtype=bool)
    x0, y0, x1, y1 = b.box
    full[y0:y1, x0:x1] = b.mask
    return full


def _union_mask(blobs: list[Blob], size: int) -> np.ndarray:
    full = np.zeros((size, size), dtype=bool)
    for b in blobs:
        full |= _full_mask(b, size)
    return full


def _relation_holds(relation: str, a: Blob, b: Blob, size: int) -> bool:
    if relation == "left of":
        return a.cx < b.cx - RELATION_MARGIN
    if relation == "right of":
        return a.cx > b.cx + RELATION_MARGIN
    if relation == "above":
        return a.cy < b.cy - RELATION_MARGIN
    if relation == "below":
        return a.cy > b.cy + RELATION_MARGIN
    if relation == "touching":
        return bool((dilate(_full_mask(a, size), TOUCH_PIXELS) & _full_mask(b, size)).any())
    if relation == "inside":  # a's box within b's, and a's centre on b's filled area
        ax0, ay0, ax1, ay1 = a.box
        bx0, by0, bx1, by1 = b.box
        within = bx0 <= ax0 and by0 <= ay0 and ax1 <= bx1 and ay1 <= by1
        filled = fill_holes(_full_mask(b, size))
        return within and bool(filled[min(size - 1, int(a.cy * size)), min(size - 1, int(a.cx * size))])
    raise ValueError(relation)


def _find(blobs: list[Blob], colour: str | None, shape: str | None) -> Blob | None:
    """The largest blob of the described kind (colour first: it is the more reliable cue)."""
    exact = [b for b in blobs if (colour is None or b.colour == colour) and (shape is None or b.shape == shape)]
    loose = [b for b in blobs if b.colour == colour] if colour is not None else []
    found = exact or loose
    return max(found, key=lambda b: b.area) if found else None


def answer(query: dict, reading: Reading) -> str:
    """The oracle's answer to one question, from the pixels alone."""
    kind, blobs = query["kind"], reading.blobs
    if kind == "exists":
        return "yes" if any((query["colour"] is None or b.colour == query["colour"]) and
                            (query["shape"] is None or b.shape == query["shape"]) for b in blobs) else "no"
    if kind == "count":
        return str(sum((query["colour"] is None or b.colour == query["colour"]) and
                       (query["shape"] is None or b.shape == query["shape"]) for b in blobs))
    if kind == "colour_of":
        b = _find(blobs, None, query["shape"])
        return b.colour if b else "none"
    if kind == "shape_of":
        b = _find(blobs, query["colour"], None)
        return b.shape if b else "none"
    if kind == "size_of":
        b = _find(blobs, query["colour"], query["shape"])
        return b.size if b else "none"
    if kind == "region":
        b = _find(blobs, query["colour"], query["shape"])
        return _region(b) if b else "none"
    if kind == "relation":
        a = _find(blobs, query["subject"]["colour"], query["subject"]["shape"])
        b = _find(blobs, query["object"]["colour"], query["object"]["shape"])
        return "yes" if a and b and a is not b and _relation_holds(query["relation"], a, b, reading.analysis.image_size) else "no"
    if kind == "text":
        return reading.text
    if kind == "text_colour":
        return reading.text_colour or "none"
    if kind == "style":
        styles = [b.style for b in blobs]
        # ties go to "outline", fixed: max over a set of str follows the per-process hash seed, and made two rebuilds
        # of the same seed disagree on a few answers
        return max(sorted(set(styles), reverse=True), key=styles.count) if styles else "none"
    if kind == "background":
        sky, ground = reading.analysis.sky, reading.analysis.ground
        if sky == ground:
            return sky or "none"
        return {pair: name for name, pair in TWO_TONE_SCENES.items()}.get((sky, ground), "none")
    raise ValueError(kind)

