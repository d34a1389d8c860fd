"""Judge: the category's rubric prompt with the image first, a parser for a JSON {analysis, score} reply or a final
``Score: N`` line, and an optional expected score from the logprobs at the score token."""
from __future__ import annotations

import json
import math
import re
from dataclasses import dataclass

from unicorn.engine.params import SamplingParams
from unicorn.selfplay.recipe import Recipe
from unicorn.selfplay.seeds import derive_seed

EXPECTED_DIGITS = 4
_SCORE_LINE = re.compile(r"score\s*[:=]\s*(\d+(?:\.\d+)?)\s*(?:/\s*10)?", re.IGNORECASE)


def judge_request(recipe: Recipe, category: str, prompt: str, image) -> dict:
    """Image first, then the rendered rubric prompt (a PIL image or the decoder's pixel tensor)."""
    content = [{"type": "image", "image": image}, {"type": "text", "text": recipe.render_judge(category, prompt)}]
    request = {"messages": [{"role": "user", "content": content}]}
    if recipe.system_prompt is not None:
        request["system_prompt"] = recipe.system_prompt
    return request


def judge_schema(max_chars: int) -> dict:
    """The JSON reply of a constrained judge: the analysis first (at most ``max_chars`` characters, so that the reply
    completes), then an integer score 0..10."""
    return {"type": "object", "properties": {"analysis": {"type": "string", "maxLength": max_chars},
                                             "score": {"type": "integer", "minimum": 0, "maximum": 10}},
            "required": ["analysis", "score"], "additionalProperties": False}


def judge_params(recipe: Recipe, run_seed: int, prompt_id: int, rollout: int) -> SamplingParams:
    j = recipe.judge
    return SamplingParams(temperature=j.temperature, max_tokens=j.max_tokens, logprobs=j.logprobs,
                          seed=derive_seed(run_seed, "judge", prompt_id, rollout),
                          json_schema=judge_schema(j.analysis_max_chars) if j.constrained else None)


@dataclass(frozen=True)
class Verdict:
    score: int | None  # None: the reply could not be parsed (kept raw, counted, excluded)
    analysis: str  # the reasoning before the score
    form: str | None  # "json" | "score_line" | None
    score_start: int | None = None  # character offset of the score in the reply (for its logprobs)


def _as_score(value) -> int | None:
    if isinstance(value, bool):
        return None
    if isinstance(value, str):
        try:
            value = float(value.strip())
        except ValueError:
            return None
    if isinstance(value, (int, float)) and math.isfinite(value) and float(value).is_integer() and 0 <= value <= 10:
        return int(value)
    return None


def parse_judgement(text: str | None) -> Verdict:
    """The last JSON object with a ``score`` (and its ``analysis``), else the last ``Score: N`` (N an integer in
    0..10, optionally ``/10``), the text before it being the analysis; else an unparsed verdict."""
    if not text:
        return Verdict(None, "", None)
    decoder = json.JSONDecoder(strict=False)  # raw control characters inside strings are kept, not a failure
    found = None
    for m in re.finditer(r"\{", text):
        try:
            value, end = decoder.raw_decode(text, m.start())
        except json.JSONDecodeError:
            continue
        if isinstance(value, dict) and "score" in value:
            found = (value, m.start(), end)
    if found is not None:
        value, start, end = found
        score = _as_score(value["score"])
        if score is not None:
            analysis = value.get("analysis", "")
            offset = text.find(str(value["score"]), start, end)
            return Verdict(score, analysis if isinstance(analysis, str) else json.dumps(analysis), "json",
                           offset if offset >= 0 else None)
    matches = list(_SCORE_LINE.finditer(text))
    if matches:
        m = matches[-1]
        score = _as_score(m.group(1))
        if score is not None:
            return Verdict(score, text[: m.start()].strip(), "score_line", m.start(1))
    return Verdict(None, "", None)


def expected_score(sample, verdict: Verdict, decode) -> float | None:
    """E[score] under the judge's distribution at the score token: the top-k logprobs there (``SamplingParams.
    logprobs``), renormalised over the candidates that read as an integer 0..10. None without logprobs or score.

    ``decode``: token id -> its text. Caveat: a score split over tokens ("1" then "0") is read from its first token.
    """
    if verdict.score_start is None or not sample.logprobs:
        return None
    pos = 0
    for token_id, record in zip(sample.token_ids, sample.logprobs):
        piece = decode(token_id)
        if pos + len(piece) > verdict.score_start and piece.strip():
            candidates = {}
            for tid, lp in {**record.top, record.token_id: record.logprob}.items():
                value = _as_score(decode(tid).strip()) if decode(tid).strip().isdigit() else None
                if value is not None:
                    candidates[value] = max(candidates.get(value, -math.inf), lp)
            if not candidates:
                return None
            top = max(candidates.values())
            weights = {v: math.exp(lp - top) for v, lp in candidates.items()}
            # rounded: logprobs move by ~1e-9 with the batch a request shares (fp32 GEMMs of other shapes), and the
            # recorded value must not make a resumed run's bytes differ
            return round(sum(v * w for v, w in weights.items()) / sum(weights.values()), EXPECTED_DIGITS)
        pos += len(piece)
    return None
