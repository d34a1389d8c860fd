"""What trivial answers score, reported beside every model figure (a target a floor meets proves nothing).

Drawing floors, per prompt (its scene, questions and clean render), each judged by the oracle as a drawing is:
    blank         a white image
    background    the prompt's own background with nothing on it
    other_scene   the clean render of another scene of the same category, through the codec (a sharp, on-topic
                  picture that ignores the prompt's details)
    codec         the prompt's own clean render through the codec: the ceiling of any drawing
Understanding floor:
    BlindAnswerer answers each question from its text alone: the answer most often right for that question text
                  on a fitting set (another split), else for its kind of query, else the first option.
Aggregation: ``mean_se`` gives the mean over seeds and its standard error.
"""
from __future__ import annotations

import random
from collections import Counter, defaultdict

import numpy as np

from unicorn.toyworld.oracle import judge
from unicorn.toyworld.questions import Question, grade_answer
from unicorn.toyworld.render import render_array
from unicorn.toyworld.scene import Scene

DRAWING_FLOORS = ("blank", "background", "other_scene", "codec")


def oracle_accuracy(scene: Scene, image, questions: list[Question]) -> tuple[float, float]:
    """(oracle score, mean grade of the prompt's questions answered by the oracle from ``image``)."""
    report = judge(scene, image, questions)
    soft = float(np.mean([grade_answer(q, report.answers[q.id]) for q in questions])) if questions else 0.0
    return float(report.score), soft


def background_only(scene: Scene) -> Scene:
    return Scene(category=scene.category, objects=[], background=scene.background)


def drawing_floors(items, vq, size: int = 64, seed: int = 0) -> dict[str, list[dict]]:
    """Rows ``{category, score, soft}`` per floor and item. ``items``: data.Item-like (category, scene, questions,
    rgb); ``vq``: the codec (``data.vq_roundtrip``). The other scene is drawn from the same items (same category,
    another index), so it is a real prompt of the split, not an easier one."""
    from unicorn.toyworld.model.data import vq_roundtrip

    rng = random.Random(f"floors:{seed}")
    by_category = defaultdict(list)
    for k, item in enumerate(items):
        by_category[item.category].append(k)
    others = []
    for k, item in enumerate(items):
        pool = [j for j in by_category[item.category] if j != k]
        if not pool:  # the item itself would make this floor the codec ceiling
            raise ValueError(f"drawing_floors: category {item.category!r} has one item; the other-scene floor "
                             "needs at least two prompts per category")
        others.append(rng.choice(pool))
    own, _ = vq_roundtrip(vq, [it.rgb for it in items])
    other = [own[j] for j in others]
    blank = np.full((size, size, 3), 255, dtype=np.uint8)
    rows: dict[str, list[dict]] = {name: [] for name in DRAWING_FLOORS}
    for k, item in enumerate(items):
        images = {"blank": blank, "background": render_array(background_only(item.scene), size),
                  "other_scene": other[k], "codec": own[k]}
        for name, image in images.items():
            score, soft = oracle_accuracy(item.scene, image, item.questions)
            rows[name].append({"category": item.category, "score": score, "soft": soft})
    return rows


class BlindAnswerer:
    """Answers from the question alone (no image): the strongest such answer a fitting set supports."""

    def __init__(self) -> None:
        self.by_text: dict[str, Counter] = defaultdict(Counter)
        self.by_kind: dict[tuple[str, str], Counter] = defaultdict(Counter)

    def fit(self, pairs) -> "BlindAnswerer":
        """``pairs``: (question text, Question with its reference answer) from a split other than the one scored."""
        for text, q in pairs:
            self.by_text[text][q.answer] += 1
            self.by_kind[(q.type, q.query.get("kind", ""))][q.answer] += 1
        return self

    def answer(self, text: str, q: Question) -> str:
        for table in (self.by_text.get(text), self.by_kind.get((q.type, q.query.get("kind", "")))):
            if table:
                if q.options:  # a majority answer that is not among this question's options cannot be right
                    allowed = [(n, a) for a, n in table.items() if a in q.options]
                    if allowed:
                        return max(allowed)[1]
                    continue
                return table.most_common(1)[0][0]
        return q.options[0] if q.options else ""


def mean_se(values) -> tuple[float, float]:
    """Mean over seeds and its standard error (sample standard deviation / sqrt(n); 0 for a single seed)."""
    x = np.asarray(list(values), dtype=np.float64)
    if len(x) == 0:
        return float("nan"), float("nan")
    se = float(x.std(ddof=1) / np.sqrt(len(x))) if len(x) > 1 else 0.0
    return float(x.mean()), se
