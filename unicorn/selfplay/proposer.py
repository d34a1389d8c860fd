"""Proposer: one prompt per engine request, its category drawn by target share, few-shot examples from the recipe's
seeds or the best earlier prompts, exact and near-duplicate removal, and the recipe's rule checks."""
from __future__ import annotations

import json
import re
import zlib

from unicorn.engine.params import SamplingParams
from unicorn.selfplay.recipe import Recipe
from unicorn.selfplay.seeds import derive_rng, derive_seed

NUMBER_WORDS = {w: i for i, w in enumerate(("zero", "one", "two", "three", "four", "five", "six", "seven", "eight",
                                             "nine", "ten", "eleven", "twelve", "thirteen", "fourteen", "fifteen",
                                             "sixteen", "seventeen", "eighteen", "nineteen", "twenty"))}
_QUOTED = re.compile(r"\"([^\"]+)\"|“([^”]+)”|‘([^’]+)’|(?<![\w])'([^']+)'(?![\w])")
_COUNT = re.compile(r"\b(\d+|" + "|".join(NUMBER_WORDS) + r")\b", re.IGNORECASE)


def proposer_request(recipe: Recipe, category: str, examples: list[str]) -> dict:
    """The engine request (a text-only chat turn) asking for one prompt of ``category``."""
    request = {"messages": [{"role": "user", "content": recipe.render_proposer(category, examples)}]}
    if recipe.system_prompt is not None:
        request["system_prompt"] = recipe.system_prompt
    return request


def proposer_params(recipe: Recipe, run_seed: int, slot: int, attempt: int) -> SamplingParams:
    p = recipe.proposer
    return SamplingParams(temperature=p.temperature, max_tokens=p.max_tokens,
                          seed=derive_seed(run_seed, "propose", slot, attempt))


def parse_proposal(text: str | None, reply: str) -> str | None:
    """The prompt in a proposer reply: ``reply="text"`` its first non-empty line, ``"json"`` the ``"prompt"`` of
    the first JSON object that has one (a bare line is accepted too). Quotes around it are dropped; None if empty."""
    if not text:
        return None
    if reply == "json":
        found = _json_field(text, "prompt")
        if isinstance(found, str):
            return found.strip() or None
    for line in text.strip().splitlines():
        line = line.strip().strip('"“”').strip()
        if line:
            return line
    return None


def _json_field(text: str, key: str):
    decoder = json.JSONDecoder()
    for start in [m.start() for m in re.finditer(r"\{", text)]:
        try:
            value, _ = decoder.raw_decode(text, start)
        except json.JSONDecodeError:
            continue
        if isinstance(value, dict) and key in value:
            return value[key]
    return None


def rule_violation(prompt: str, checks: dict) -> str | None:
    """The first of the category's checks the prompt fails, in words, or None if it passes them all."""
    words = prompt.split()
    lower = prompt.lower()
    if "min_words" in checks and len(words) < checks["min_words"]:
        return f"{len(words)} words, below {checks['min_words']}"
    if "max_words" in checks and len(words) > checks["max_words"]:
        return f"{len(words)} words, above {checks['max_words']}"
    if "max_chars" in checks and len(prompt) > checks["max_chars"]:
        return f"{len(prompt)} characters, above {checks['max_chars']}"
    if checks.get("require_any") and not any(p.lower() in lower for p in checks["require_any"]):
        return "has none of the required phrases"
    for phrase in checks.get("forbid_any", []):
        if phrase.lower() in lower:
            return f"has the forbidden phrase {phrase!r}"
    quotes = [next(g for g in m.groups() if g is not None) for m in _QUOTED.finditer(prompt)]
    if checks.get("require_quote") and not quotes:
        return "quotes no text"
    for q in quotes:
        if "max_quote_words" in checks and len(q.split()) > checks["max_quote_words"]:
            return f"quoted text of {len(q.split())} words, above {checks['max_quote_words']}"
        if "max_quote_chars" in checks and len(q) > checks["max_quote_chars"]:
            return f"quoted text of {len(q)} characters, above {checks['max_quote_chars']}"
    counts = [int(m) if m.isdigit() else NUMBER_WORDS[m.lower()] for m in _COUNT.findall(_QUOTED.sub(" ", prompt))]
    if checks.get("require_count") and not counts:
        return "names no count"
    if "max_count" in checks:
        over = [n for n in counts if n > checks["max_count"]]
        if over:
            return f"count {over[0]} above {checks['max_count']}"
    return None


def normalize(prompt: str) -> str:
    """The form exact dedup compares: lower case, letters and digits only, single spaces."""
    return " ".join(re.sub(r"[^\w]+", " ", prompt.lower()).split())


_NUM_PERM, _ROWS = 32, 4  # MinHash: 8 bands of 4 rows find pairs of Jaccard 0.9 almost surely, 0.5 rarely
_PRIME = (1 << 61) - 1
_rng = derive_rng(0, "minhash")
_PERMS = [(_rng.randrange(1, _PRIME), _rng.randrange(0, _PRIME)) for _ in range(_NUM_PERM)]


def shingles(text: str, n: int = 3) -> set[str]:
    padded = f" {text} "
    return {padded[i : i + n] for i in range(max(1, len(padded) - n + 1))}


def jaccard(a: set, b: set) -> float:
    return len(a & b) / len(a | b) if a or b else 1.0


def _band_keys(grams: set[str]) -> list[tuple]:
    hashes = [zlib.crc32(g.encode()) for g in grams]
    mins = [min((a * h + b) % _PRIME for h in hashes) for a, b in _PERMS]
    return [(i, tuple(mins[i * _ROWS : (i + 1) * _ROWS])) for i in range(_NUM_PERM // _ROWS)]


class PromptPool:
    """The prompts accepted so far: exact duplicates (normalized text, over every category) and near-duplicates
    (character 3-gram Jaccard >= ``near``, within a category, found through MinHash bands) are refused."""

    def __init__(self, near: float | None):
        self.near = near
        self._exact: set[str] = set()
        self._bands: dict[tuple, list[str]] = {}  # (category, band key) -> normalized prompts

    def __len__(self) -> int:
        return len(self._exact)

    def duplicate(self, category: str, prompt: str) -> str | None:
        """"exact", "near" or None."""
        norm = normalize(prompt)
        if norm in self._exact:
            return "exact"
        if self.near is not None:
            grams = shingles(norm)
            for key in _band_keys(grams):
                for other in self._bands.get((category, key), ()):
                    if jaccard(grams, shingles(other)) >= self.near:
                        return "near"
        return None

    def add(self, category: str, prompt: str) -> None:
        norm = normalize(prompt)
        self._exact.add(norm)
        if self.near is not None:
            for key in _band_keys(shingles(norm)):
                self._bands.setdefault((category, key), []).append(norm)


def allocate_categories(recipe: Recipe, run_seed: int, epoch: int, first_slot: int, num_slots: int,
                        assigned: dict[str, int], active: list[str]) -> list[str]:
    """Categories of the slots ``first_slot ..`` of one epoch: each slot goes to the active category furthest below
    its target share of all slots so far (so every prefix of the run keeps the shares within one prompt), then
    the epoch's order is shuffled by seed. ``assigned`` (counts so far) is updated in place."""
    total = sum(recipe.categories[c].share for c in active)
    out = []
    for slot in range(first_slot, first_slot + num_slots):
        deficit = {c: recipe.categories[c].share / total * (slot + 1) - assigned.get(c, 0) for c in active}
        best = max(active, key=lambda c: (deficit[c], -active.index(c)))
        assigned[best] = assigned.get(best, 0) + 1
        out.append(best)
    derive_rng(run_seed, "categories", epoch).shuffle(out)
    return out


def choose_examples(recipe: Recipe, run_seed: int, category: str, slot: int, demonstrations: list[str]) -> list[str]:
    """Up to ``num_examples`` few-shot examples: the category's demonstrations (the best earlier prompts), topped up
    from the recipe's seeds, drawn by seed."""
    k = recipe.proposer.num_examples
    if k == 0:
        return []
    pool = list(dict.fromkeys(list(demonstrations) + list(recipe.categories[category].seeds)))
    rng = derive_rng(run_seed, "examples", slot)
    return rng.sample(pool, min(k, len(pool)))
