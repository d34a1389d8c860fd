"""The toy world's judging rubrics: what the judge is told, and the weights the oracle scores with.

One rubric per category (method.md section 2: primary criteria, score bands, any other visible error counts). The
judge sees ``rubric_text(category)``; the oracle (oracle.py) splits 10 points over the criteria in ``RUBRICS``, so
the two agree on what matters. This module imports nothing of the oracle, the sampler or the renderer: the self-play
loop reads it, and the loop never sees the oracle.
"""
from __future__ import annotations

from .scene import CATEGORIES

# category -> criterion -> points (of 10); the oracle measures each criterion as a fraction in [0, 1]
RUBRICS: dict[str, dict[str, int]] = {
    "attribute": {"colours": 4, "shapes": 3, "sizes": 1, "quality": 2},
    "counting": {"count": 5, "objects": 3, "quality": 2},
    "spatial": {"relations": 5, "objects": 3, "quality": 2},
    "interaction": {"relations": 5, "objects": 3, "quality": 2},
    "text": {"spelling": 5, "placement": 2, "rest": 3},
    "style": {"style": 4, "objects": 4, "quality": 2},
    "scene": {"background": 4, "objects": 2, "regions": 2, "quality": 2},
    "knowledge": {"implied": 5, "objects": 3, "quality": 2},
    "imagination": {"negation": 5, "objects": 3, "quality": 2},
}
assert set(RUBRICS) == set(CATEGORIES) and all(sum(r.values()) == 10 for r in RUBRICS.values())

# What each criterion asks, in the judge's words.
CRITERIA: dict[str, str] = {
    "colours": "every object has the colour the prompt names",
    "shapes": "every object has the shape the prompt names",
    "sizes": "every object has the size the prompt names",
    "count": "each kind of object appears exactly as many times as the prompt says",
    "objects": "every object the prompt asks for is there, with its colour and shape",
    "relations": "every stated relation holds (left of, right of, above, below, touching, inside)",
    "spelling": "the text reads exactly the letters the prompt quotes",
    "placement": "the text is in the band the prompt names (top, middle, bottom), in the named colour",
    "rest": "any shape the prompt adds is there, nothing else is, and the image is clean",
    "style": "the shapes are drawn as the prompt says: solid filled, or outlines only",
    "background": "the background is the named setting (day: light blue sky over sand; night: navy over charcoal)",
    "regions": "each object is where the prompt puts it: in the sky or on the ground",
    "implied": "the colour, shape or count the prompt describes indirectly is the right one",
    "negation": "nothing the prompt rules out is in the image",
    "quality": "no extra objects, no smudges or off-palette colours, the named background",
}
assert all(name in CRITERIA for r in RUBRICS.values() for name in r)

# Score bands: all constraints met = 10, one clear violation = 4-5, irrelevant or empty = 0-3 (method.md).
BANDS: dict[str, str] = {
    "counting": ("10: exact count, every object right and clean. 8-9: exact count, small flaws. 5-7: exact count, "
                 "objects distorted or of the wrong colour. 3-4: right count, but shapes merged or broken. "
                 "0-2: wrong count, or nothing recognisable."),
    "text": ("10: perfect text, right band and colour. 9: tiny flaws. 7-8: slight legibility problems. 4-6: one or "
             "two wrong letters. 1-3: gibberish. 0: no text."),
}
DEFAULT_BAND = ("10: every constraint met, clean image. 8-9: all main constraints met, minor lapses. 6-7: the main idea "
                "with small misses. 4-5: a clear violation (a wrong or missing object, attribute or relation). "
                "0-3: irrelevant, empty or impossible to read.")


def rubric_text(category: str) -> str:
    """The rubric as the judge reads it: criteria with their points, then the score bands."""
    assert category in RUBRICS, f"no rubric for category {category!r}"
    lines = [f"Rubric for '{category}' (10 points):"]
    lines += [f"- {name} ({points}): {CRITERIA[name]}." for name, points in RUBRICS[category].items()]
    lines.append("A criterion over several objects scores only when all of them are right; any other visible error "
                 "also costs points.")
    lines.append("Bands: " + BANDS.get(category, DEFAULT_BAND))
    return "\n".join(lines)
