"""UniCycle-style questions about what a prompt implies, with exact answers and a grader.

Schema of method.md section 6 (`id`, `type` in mc|yesno|open|text, `question`, `options`, `answer`,
`keywords`) plus `query`: a machine-readable form of the question that the oracle answers from pixels.
Questions only ask about what the prompt asserts (never about attributes it leaves open).
"""
from __future__ import annotations

import random
import re
from dataclasses import asdict, dataclass, field

from .prompts import RELATION_WORDS, noun
from .scene import OBJECT_COLOURS, PLAIN_BACKGROUNDS, SHAPES, SIZES, STYLES, TWO_TONE_SCENES, Scene

QUESTION_TYPES = ("mc", "yesno", "open", "text")
OPPOSITE = {"left of": "right of", "right of": "left of", "above": "below", "below": "above"}


@dataclass
class Question:
    id: str
    type: str
    question: str
    answer: str
    options: list[str] = field(default_factory=list)
    keywords: list[str] = field(default_factory=list)
    query: dict = field(default_factory=dict)

    def __post_init__(self):
        assert self.type in QUESTION_TYPES, self.type
        assert self.type != "mc" or self.answer in self.options, (self.answer, self.options)

    def to_dict(self) -> dict:
        return asdict(self)

    @classmethod
    def from_dict(cls, d: dict) -> Question:
        return cls(**d)


def make_questions(scene: Scene, rng: random.Random) -> list[Question]:
    """Questions whose answers follow from the scene's prompt."""
    qs: list[tuple] = []  # (type, question, answer, options, keywords, query)
    objs = scene.objects
    named = [o for o in objs if o.asserts("colour") and o.asserts("shape")]
    kinds = list(dict.fromkeys((o.colour, o.shape) for o in named))
    shape_counts = {s: sum(o.shape == s for o in objs) for s in SHAPES}
    colour_counts = {c: sum(o.colour == c for o in objs) for c in OBJECT_COLOURS}

    for colour, shape in kinds[:2]:
        qs.append(("yesno", f"Is there a {noun(colour, shape)} in the image?", "yes", ["yes", "no"], [],
                   {"kind": "exists", "colour": colour, "shape": shape}))
    for o in named:
        if shape_counts[o.shape] == 1 and scene.category != "counting":
            options = _options(rng, o.colour, list(OBJECT_COLOURS))
            qs.append(("mc", f"What colour is the {o.shape}?", o.colour, options, [], {"kind": "colour_of", "shape": o.shape}))
        if colour_counts[o.colour] == 1:
            qs.append(("mc", f"What shape is the {o.colour} object?", o.shape, _options(rng, o.shape, list(SHAPES)), [],
                       {"kind": "shape_of", "colour": o.colour}))
        if o.asserts("size") and colour_counts[o.colour] == 1:
            qs.append(("mc", f"How big is the {noun(o.colour, o.shape)}: small, medium or large?", o.size, list(SIZES), [],
                       {"kind": "size_of", "colour": o.colour, "shape": o.shape}))
    if scene.category in ("counting", "knowledge", "imagination"):
        for (colour, shape), n in scene.groups().items():
            qs.append(("open", f"How many {noun(colour, shape, plural=True)} are there?", str(n), [], [],
                       {"kind": "count", "colour": colour, "shape": shape}))
    for rel in scene.relations:
        a, b = objs[rel.subject], objs[rel.object]
        subject = {"colour": a.colour, "shape": a.shape}
        object_ = {"colour": b.colour, "shape": b.shape}
        qs.append(("yesno", f"Is the {noun(a.colour, a.shape)} {RELATION_WORDS[rel.relation]} the {noun(b.colour, b.shape)}?",
                   "yes", ["yes", "no"], [], {"kind": "relation", "subject": subject, "relation": rel.relation, "object": object_}))
        flipped = OPPOSITE.get(rel.relation)
        if flipped:
            qs.append(("yesno", f"Is the {noun(a.colour, a.shape)} {RELATION_WORDS[flipped]} the {noun(b.colour, b.shape)}?",
                       "no", ["yes", "no"], [], {"kind": "relation", "subject": subject, "relation": flipped, "object": object_}))
        elif rel.relation == "inside":
            qs.append(("yesno", f"Is the {noun(b.colour, b.shape)} inside the {noun(a.colour, a.shape)}?",
                       "no", ["yes", "no"], [], {"kind": "relation", "subject": object_, "relation": "inside", "object": subject}))
    if scene.text is not None:
        qs.append(("text", "What letters are written in the image?", scene.text.text, [], [scene.text.text], {"kind": "text"}))
        qs.append(("mc", "What colour are the letters?", scene.text.colour, _options(rng, scene.text.colour, list(OBJECT_COLOURS)),
                   [], {"kind": "text_colour"}))
    if scene.category == "style":
        qs.append(("mc", "Are the shapes filled in or drawn as outlines?", scene.style, list(STYLES), [], {"kind": "style"}))
    if scene.background.scene:
        qs.append(("mc", "Is it day or night in the image?", scene.background.scene, list(TWO_TONE_SCENES), [], {"kind": "background"}))
        for o in objs:
            if o.region and colour_counts[o.colour] == 1:
                qs.append(("mc", f"Is the {noun(o.colour, o.shape)} in the sky or on the ground?", o.region, ["sky", "ground"], [],
                           {"kind": "region", "colour": o.colour, "shape": o.shape}))
    elif scene.mentions_background:
        qs.append(("mc", "What colour is the background?", scene.background.colour, list(PLAIN_BACKGROUNDS), [], {"kind": "background"}))
    for rule in scene.forbid:
        ((attribute, value),) = rule.items()
        what = f"{value} shape" if attribute == "colour" else value
        qs.append(("yesno", f"Is there any {what} in the image?", "no", ["yes", "no"], [],
                   {"kind": "exists", "colour": rule.get("colour"), "shape": rule.get("shape")}))
    return [Question(f"q{i}", t, q, a, o, k, query) for i, (t, q, a, o, k, query) in enumerate(qs)]


def _options(rng: random.Random, answer: str, pool: list[str], k: int = 4) -> list[str]:
    options = [answer] + rng.sample([p for p in pool if p != answer], min(k, len(pool)) - 1)
    rng.shuffle(options)
    return options


def normalise(text: str) -> str:
    return re.sub(r"[^a-z0-9 ]", "", text.lower()).strip()


def grade_answer(question: Question, answer: str) -> float:
    """s_q of method.md section 6: 0/1 for mc, yesno and open; fraction of keywords recovered for text."""
    if question.type == "text":
        got = normalise(answer)
        return sum(normalise(k) in got for k in question.keywords) / max(1, len(question.keywords))
    return float(normalise(answer) == normalise(question.answer))
