"""The toy world's role prompt templates: what the proposer is asked, how a question is put to the model, and the
wording of a judge's rubric reasoning. The trainer's own formats (unicorn/training/formats.py) wrap these in the chat
template. Pretraining (model/data.py) and the self-play loop use the same words; like rubrics.py, this module
imports nothing of the oracle, the sampler or the renderer.
"""
from __future__ import annotations

from .questions import Question
from .rubrics import RUBRICS

PROPOSE_INSTRUCTION = "Propose a new text-to-image prompt in the category '{category}'."
RATE_INSTRUCTION = ("Rate this text-to-image prompt for the category '{category}' from 0 to 10.\n"
                    "Prompt: \"{prompt}\"\nSay if it is valid, if it follows the category's rule and how many "
                    "constraints it sets, then end with a line 'Score: N'.")


def propose_instruction(category: str) -> str:
    return PROPOSE_INSTRUCTION.format(category=category)


def rate_instruction(category: str, prompt: str) -> str:
    return RATE_INSTRUCTION.format(category=category, prompt=prompt)


def rate_score(valid: bool, follows_rule: bool, constraints: int) -> int:
    """A prompt's worth as a demonstration [ours]: nothing if the world cannot draw it, little if it belongs to another
    category, more the more checkable constraints it sets."""
    return 0 if not valid else 2 if not follows_rule else min(10, 4 + constraints)


def rate_response(valid: bool, follows_rule: bool, constraints: int) -> str:
    """The rating reply: the three labels in words, then ``Score: N``."""
    yes = {True: "yes", False: "no"}
    return (f"valid {yes[valid]}, follows the rule {yes[follows_rule and valid]}, "
            f"constraints {constraints if valid else 0}.\nScore: {rate_score(valid, follows_rule, constraints)}")


def question_text(q: Question) -> str:
    """The question as asked of the model: multiple choice lists its options."""
    if q.type == "mc":
        return f"{q.question} Options: {', '.join(q.options)}."
    if q.type == "yesno":
        return f"{q.question} Answer yes or no."
    return q.question


def rubric_reasoning(category: str, points: dict[str, float]) -> str:
    """Short reasoning over the category's rubric, criterion by criterion ("colours right, shapes partly right, ..."):
    the judge's words before ``Score: N``."""
    parts = []
    for name, weight in RUBRICS[category].items():
        got = points.get(name, 0.0)
        verdict = "right" if got >= weight - 1e-6 else "wrong" if got <= 1e-6 else "partly right"
        parts.append(f"{name} {verdict}")
    return ", ".join(parts) + "."


def reasoning_vocabulary(category: str) -> str:
    """Every word rubric_reasoning can write for a category (for the tokenizer's corpus)."""
    return " ".join(f"{name} right, {name} wrong, {name} partly right." for name in RUBRICS[category])


def rating_vocabulary() -> str:
    """Every word rate_response can write (for the tokenizer's corpus)."""
    return " ".join(rate_response(v, f, n) for v in (True, False) for f in (True, False) for n in range(10))
