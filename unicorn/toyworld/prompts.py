"""Scene -> natural-language prompt, with paraphrases picked by a seeded rng.

A prompt never travels alone: records keep the scene it was written from (see dataset.py),
so measurement always goes back to the spec, never parses the words.
"""
from __future__ import annotations

import random

from .scene import KNOWLEDGE, TEXT_BAND_CENTRE, TWO_TONE_SCENES, WORDS, Scene, ShapeSpec

NUMBER_WORDS = ("zero", "one", "two", "three", "four", "five", "six", "seven", "eight", "nine", "ten")
RELATION_WORDS = {"left of": "to the left of", "right of": "to the right of", "above": "above", "below": "below",
                  "touching": "touching", "inside": "inside"}
BAND_WORDS = {"top": "at the top", "middle": "in the middle", "bottom": "at the bottom"}
SCENE_WORDS = {
    "day": ("on a sunny day, with a light blue sky over sandy ground", "in daylight: pale blue sky above a sandy plain"),
    "night": ("at night, with a navy sky over dark charcoal ground", "under a dark night sky above charcoal-grey land"),
}
assert set(SCENE_WORDS) == set(TWO_TONE_SCENES)


def noun(colour: str | None, shape: str | None, size: str | None = None, plural: bool = False) -> str:
    """'large red circle', 'red shapes', 'triangle'... (no article)."""
    head = (shape or "shape") + ("s" if plural else "")
    return " ".join(w for w in (size, colour, head) if w)


def with_article(phrase: str, definite: bool = False) -> str:
    if definite:
        return "the " + phrase
    return ("an " if phrase[0] in "aeiou" else "a ") + phrase


def describe(obj: ShapeSpec, definite: bool = False) -> str:
    """The object as the prompt asserts it: 'a large red circle', 'the blue shape'."""
    return with_article(noun(obj.colour if obj.asserts("colour") else None, obj.shape if obj.asserts("shape") else None,
                             obj.size if obj.asserts("size") else None), definite)


def count_phrase(n: int, colour: str | None, shape: str | None) -> str:
    return f"{NUMBER_WORDS[n]} {noun(colour, shape, plural=n != 1)}"


def join(parts: list[str]) -> str:
    return parts[0] if len(parts) == 1 else ", ".join(parts[:-1]) + " and " + parts[-1]


def background_phrase(scene: Scene) -> str:
    return f"on a {scene.background.colour} background"


def sentence(text: str) -> str:
    text = text.strip()
    return text[0].upper() + text[1:] + ("" if text.endswith((".", "!")) else ".")


def make_prompt(scene: Scene, rng: random.Random) -> str:
    """One paraphrase of the scene's prompt; the same rng state always gives the same words."""
    text = _WRITERS[scene.category](scene, rng)
    if scene.mentions_background and scene.background.colour:
        text = text.rstrip(".") + " " + background_phrase(scene)
    return sentence(text)


def _attribute(scene, rng):
    things = join([describe(o) for o in scene.objects])
    return rng.choice(("{t}", "a picture of {t}", "draw {t}", "a simple illustration showing {t}")).format(t=things)


def _counting(scene, rng):
    groups = [count_phrase(n, c, s) for (c, s), n in scene.groups().items()]
    things = join(groups)
    return rng.choice(("{t}", "exactly {t}", "a picture with {t}", "count them: {t}", "{t}, no more, no fewer")).format(t=things)


def _relation_clause(scene, rel, mentioned: set[int], verb: str) -> str:
    """'a red circle [is] to the left of a blue square'; objects already named become 'the ...'."""
    def name(i):
        phrase = describe(scene.objects[i], definite=i in mentioned)
        mentioned.add(i)
        return phrase
    subject = name(rel.subject)
    return " ".join(w for w in (subject, verb, RELATION_WORDS[rel.relation], name(rel.object)) if w)


def _spatial(scene, rng):
    mentioned: set[int] = set()
    if len(scene.relations) == 1:
        clause = _relation_clause(scene, scene.relations[0], mentioned, verb="")
        return rng.choice(("{c}", "a picture of {c}", "{c}, on a plain background")).format(c=clause)
    return " ".join(sentence(_relation_clause(scene, r, mentioned, verb="is")) for r in scene.relations)


def _interaction(scene, rng):
    rel = scene.relations[0]
    a, b = describe(scene.objects[rel.subject]), describe(scene.objects[rel.object])
    if rel.relation == "inside":
        return rng.choice(("{a} inside {b}", "{b} with {a} inside it", "{a} sitting inside {b}")).format(a=a, b=b)
    return rng.choice(("{a} touching {b}", "{a} and {b} side by side, touching each other",
                       "{a} pressed against {b}")).format(a=a, b=b)


def _text(scene, rng):
    t = scene.text
    kind = "the word" if t.text in WORDS else "the letter" if len(t.text) == 1 else "the letters"
    text = rng.choice(("{k} '{w}' written in {c} capitals {b}", "{k} '{w}' in {c} {b}",
                       "a label reading '{w}' in {c} letters, {b}")).format(k=kind, w=t.text, c=t.colour, b=BAND_WORDS[t.band])
    if scene.objects:
        obj = scene.objects[0]
        where = "above" if obj.y < TEXT_BAND_CENTRE[t.band] else "below"
        text += f", with {describe(obj)} {where} the text"
    return text


def _style(scene, rng):
    things = join([describe(o) for o in scene.objects])
    if scene.style == "outline":
        forms = ("{t}, drawn as " + ("outlines" if len(scene.objects) > 1 else "an outline") + " only", "line art: the outlines of {t}, not filled in", "{t} as hollow outlines")
    else:
        forms = ("{t} as solid filled shapes", "a flat illustration of {t} with solid fill", "{t}, completely filled in")
    return rng.choice(forms).format(t=things)


def _scene(scene, rng):
    places = [f"{describe(o)} {'in the sky' if o.region == 'sky' else 'on the ground'}" for o in scene.objects]
    setting = rng.choice(SCENE_WORDS[scene.background.scene])
    return rng.choice(("a landscape {s}, with {o}", "{o}, {s}")).format(s=setting, o=join(places))


def _knowledge(scene, rng):
    obj = scene.objects[0]
    implicit = scene.implicit
    n = len(scene.objects)
    head = noun(None if "colour" in implicit else obj.colour, None if "shape" in implicit else obj.shape, plural=n > 1)
    if n == 1:
        head = with_article(head)
    elif "count" not in implicit:
        head = f"{NUMBER_WORDS[n]} {head}"
    if "shape" in implicit:
        head += " " + KNOWLEDGE["shape"][implicit["shape"]][1]
    return ", ".join([head] + [KNOWLEDGE[a][implicit[a]][1] for a in ("colour", "count") if a in implicit])


def _imagination(scene, rng):
    ((attribute, value),) = scene.forbid[0].items()
    obj, n = scene.objects[0], len(scene.objects)
    if not obj.asserts("shape") and not obj.asserts("colour"):
        return rng.choice(("{n} shapes, none of them {v}", "a picture of {n} shapes with nothing {v} anywhere",
                           "{n} shapes in any colours except {v}")).format(n=NUMBER_WORDS[n], v=value)
    if attribute == "shape":
        shape = with_article(noun(obj.colour, None))
        return rng.choice(("{o} that is not a {v}", "{o} of any kind except a {v}")).format(o=shape, v=value)
    return rng.choice(("{o} that is not {v}", "{o} in any colour but {v}")).format(o=with_article(obj.shape), v=value)


_WRITERS = {
    "attribute": _attribute, "counting": _counting, "spatial": _spatial, "interaction": _interaction,
    "text": _text, "style": _style, "scene": _scene, "knowledge": _knowledge, "imagination": _imagination,
}
