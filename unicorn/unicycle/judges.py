"""Judges: each turns (prompt, question, given answer) items into verdicts, s_q in [0, 1] or None (unparsed).

    RuleJudge   mc: the answer names an option by its letter ("B", "(b)", "b)", "option B") or by its text;
                yesno: the first yes/no variant word ("yes", "Yeah, ...", "no", "Nope"); open: the normalised
                answer equals the reference (number words count as digits), or the toy world's own grader for
                questions with ``grader: "toyworld"``; text: the keyword fraction (scoring.keyword_fraction).
                An answer that names no option / no yes or no is wrong (0), with the reason in ``reply``.
    LLMJudge    asks a text model (clients.EngineClient: any model the engine loads; clients.OpenAIClient: an
                OpenAI-compatible endpoint) for ``Verdict: correct`` or ``Verdict: wrong`` on mc, yesno and
                open questions; a reply without a verdict is None (counted as unparsed). Text questions keep
                the keyword fraction, which is defined by string matching, not by opinion.
"""
from __future__ import annotations

import re
from dataclasses import dataclass

from .schema import Question
from .scoring import contains_words, keyword_fraction, normalise

YES = ("yes", "y", "yeah", "yep", "yup", "true", "correct", "affirmative")
NO = ("no", "n", "nope", "nah", "false", "incorrect", "negative")
NUMBER_WORDS = {w: str(i) for i, w in enumerate(
    "zero one two three four five six seven eight nine ten eleven twelve thirteen fourteen fifteen sixteen "
    "seventeen eighteen nineteen twenty".split())}
LETTER = re.compile(r"^\s*(?:(?:option|answer|choice)\s*[:=]?\s*)?[\(\[]?([A-Za-z])(?:[\)\]\.:,]|\s*$)", re.I)

JUDGE_TEMPLATE = (
    "An image was drawn for the prompt: {prompt}\n"
    "A question about the image: {question}\n"
    "{options}"
    "Reference answer: {answer}\n"
    "Answer given: {given}\n"
    "Is the answer given correct? Reply with one line: Verdict: correct, or Verdict: wrong."
)
VERDICT = re.compile(r"verdict\W{0,6}(correct|incorrect|wrong|right|yes|no)\b", re.I)


@dataclass(frozen=True)
class Verdict:
    score: float | None  # s_q; None: the judge's reply could not be parsed
    reply: str | None = None  # the judge's raw reply, or the rule's reading of the answer

    @property
    def parsed(self) -> bool:
        return self.score is not None

    def to_dict(self) -> dict:
        return {"score": self.score, "parsed": self.parsed, "reply": self.reply}


@dataclass(frozen=True)
class Item:
    prompt: str
    question: Question
    given: str


def yes_no(answer: str) -> str | None:
    """"yes" / "no" from an answer's first yes/no variant word, else None."""
    for word in normalise(answer).split():
        if word in YES:
            return "yes"
        if word in NO:
            return "no"
    return None


def chosen_option(answer: str, options) -> str | None:
    """The option an answer names: its exact text, its letter (A = first), or the one option whose words it
    contains (an option contained in another matched option gives way to it); else None."""
    options = list(options)
    norm = normalise(answer)
    for option in options:
        if norm == normalise(option):
            return option
    m = LETTER.match(answer)
    if m:
        k = ord(m.group(1).lower()) - ord("a")
        if 0 <= k < len(options):
            return options[k]
    found = [o for o in options if contains_words(answer, o)]
    found = [o for o in found if not any(o != p and contains_words(p, o) for p in found)]
    return found[0] if len(found) == 1 else None


def _numbers(text: str) -> str:
    return " ".join(NUMBER_WORDS.get(w, w) for w in normalise(text).split())


def toyworld_grade(question: Question, answer: str) -> float:
    """The toy world's own grader (unicorn.toyworld.questions.grade_answer) on one of our questions."""
    from unicorn.toyworld.questions import Question as WorldQuestion, grade_answer

    q = WorldQuestion(question.id, question.type, question.question, question.answer, list(question.options),
                      list(question.keywords))
    return float(grade_answer(q, answer))


def rule_verdict(question: Question, given: str) -> Verdict:
    if question.type == "text":
        return Verdict(keyword_fraction(question.keywords, given), None)
    if question.type == "yesno":
        said = yes_no(given)
        return Verdict(float(said == question.answer.strip().lower()), said or "no yes or no in the answer")
    if question.type == "mc":
        option = chosen_option(given, question.options)
        return Verdict(float(option == question.answer), option or "no option named")
    if question.grader == "toyworld":
        return Verdict(toyworld_grade(question, given), "toyworld grader")
    return Verdict(float(bool(_numbers(given)) and _numbers(given) == _numbers(question.answer)), None)


class RuleJudge:
    name = "rule"

    def judge(self, items: list[Item]) -> list[Verdict]:
        return [rule_verdict(it.question, it.given) for it in items]


def judge_prompt(item: Item) -> str:
    q = item.question
    options = f"Options: {', '.join(q.options)}\n" if q.options and q.type == "mc" else ""
    return JUDGE_TEMPLATE.format(prompt=item.prompt, question=q.question, options=options, answer=q.answer,
                                 given=item.given)


def parse_verdict(reply: str) -> float | None:
    """1.0 / 0.0 from the last ``Verdict: ...`` in a reply, else None."""
    matches = VERDICT.findall(reply or "")
    if not matches:
        return None
    return 1.0 if matches[-1].lower() in ("correct", "right", "yes") else 0.0


class LLMJudge:
    """Verdicts from a text model (``client.complete(prompts) -> replies``), batched over all items."""

    def __init__(self, client):
        self.client = client
        self.name = f"model:{client.name}"

    def judge(self, items: list[Item]) -> list[Verdict]:
        asked = [k for k, it in enumerate(items) if it.question.type != "text"]
        replies = self.client.complete([judge_prompt(items[k]) for k in asked]) if asked else []
        verdicts: list[Verdict | None] = [None] * len(items)
        for k, reply in zip(asked, replies):
            verdicts[k] = Verdict(parse_verdict(reply), reply)
        for k, it in enumerate(items):
            if verdicts[k] is None:
                verdicts[k] = rule_verdict(it.question, it.given)
        return verdicts


def make_judge(spec: str, engine_kwargs: dict | None = None, openai_model: str = "gpt-4o"):
    """``rule`` | ``model:PATH`` (a checkpoint the engine loads) | ``openai:URL`` (an OpenAI-compatible endpoint)."""
    from .clients import EngineClient, OpenAIClient

    if spec == "rule":
        return RuleJudge()
    kind, _, target = spec.partition(":")
    if kind == "model" and target:
        from unicorn.engine.llm_engine import Engine

        return LLMJudge(EngineClient(Engine(target, **(engine_kwargs or {})), name=target))
    if kind == "openai" and target:
        return LLMJudge(OpenAIClient(target, model=openai_model))
    raise ValueError(f"unknown judge {spec!r} (expected rule, model:PATH or openai:URL)")
