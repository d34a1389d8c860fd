"""UniCycle scores (method.md section 6, our reading of the paper).

Per question q of prompt p, s_q in [0, 1]:
    mc, yesno, open   1 if the answer is judged right, else 0
    text              the fraction of the reference keywords found in the answer (``keyword_fraction``)
Per prompt, over its questions Q_p:
    Soft(p) = (1 / |Q_p|) * sum_q s_q
    Hard(p) = 1 if s_q = 1 for every q in Q_p, else 0
Reported as 100 x the mean of Soft(p) (resp. Hard(p)) over the prompts, overall and per category (a category's
score is the mean over its own prompts; "overall" is the mean over all prompts, not over categories).

A judge reply that cannot be parsed gives no s_q (None). It enters Soft and Hard as 0, so a broken judge cannot
raise a score, and it is counted: ``unparsed`` per category and overall, beside the scores.

Keyword normalisation (``normalise``): Unicode case folding; every character that is not a letter or a digit
(punctuation, symbols, underscores) becomes a space; runs of whitespace collapse to one space; ends stripped. A
keyword is recovered when its normalised words appear as consecutive whole words of the normalised answer
("red car" is in "a Red, car!" but "car" is not in "cart"). A keyword with no letters or digits is never recovered.
"""
from __future__ import annotations

import unicodedata


def normalise(text: str) -> str:
    """Case-folded words of ``text`` separated by single spaces; see the module docstring."""
    chars = [c if unicodedata.category(c)[0] in "LN" else " " for c in text.casefold()]
    return " ".join("".join(chars).split())


def contains_words(haystack: str, needle: str) -> bool:
    """Whether the normalised words of ``needle`` occur consecutively in the normalised ``haystack``."""
    n, h = normalise(needle), normalise(haystack)
    return bool(n) and f" {n} " in f" {h} "


def keyword_fraction(keywords, answer: str) -> float:
    """The share of ``keywords`` recovered in ``answer`` (s_q of a text question)."""
    keywords = list(keywords)
    if not keywords:
        raise ValueError("a text question needs at least one reference keyword")
    return sum(contains_words(answer, k) for k in keywords) / len(keywords)


def soft(scores) -> float:
    """Soft(p) from the prompt's s_q (None, an unparsed verdict, counts 0)."""
    scores = list(scores)
    if not scores:
        raise ValueError("a prompt needs at least one question")
    return sum(0.0 if s is None else s for s in scores) / len(scores)


def hard(scores) -> float:
    """Hard(p): 1.0 when every s_q is 1, else 0.0 (an unparsed verdict is not 1)."""
    scores = list(scores)
    if not scores:
        raise ValueError("a prompt needs at least one question")
    return float(all(s is not None and s >= 1.0 for s in scores))


def _block(rows: list[tuple[str, list]]) -> dict:
    n = len(rows)
    return {
        "soft": round(100.0 * sum(soft(s) for _, s in rows) / n, 4),
        "hard": round(100.0 * sum(hard(s) for _, s in rows) / n, 4),
        "prompts": n,
        "questions": sum(len(s) for _, s in rows),
        "unparsed": sum(x is None for _, s in rows for x in s),
    }


def summarise(rows) -> dict:
    """``rows``: (category, [s_q or None, ...]) per prompt -> {"overall": {...}, "categories": {name: {...}}} with
    soft, hard (100 x mean over prompts), prompts, questions and unparsed; categories sorted by name."""
    rows = [(c, list(s)) for c, s in rows]
    if not rows:
        raise ValueError("no prompts to score")
    by_category: dict[str, list] = {}
    for category, scores in rows:
        by_category.setdefault(category, []).append((category, scores))
    return {"overall": _block(rows), "categories": {c: _block(by_category[c]) for c in sorted(by_category)}}
