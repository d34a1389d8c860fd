"""Recipes as data: the directory of JSON files that tells the self-play loop what to ask and how to choose.

A recipe directory (``unicorn/recipes/<name>/``, or any directory a user copies and edits) holds:

    recipe.json      name, description, thresholds, CPR mix, and the settings of each role
    categories.json  {"categories": {name: {"rule", "rubric", "checks"}}, "shares": {name: target share}}
                     (shares sum to 1)
    seeds.json       {category: [example prompt, ...]}: the few-shot seeds of the proposer
    rubrics.json     {"notes": [...], "default_bands": [...], "rubrics": {name: {"criteria", "notes", "bands"}}}
    templates.json   the prompt template of every role (proposer, solver, judge, caption, reflection,
                     rate_prompt), the layout of a rendered rubric and of the proposer's examples

Templates are ``str.format`` strings with named placeholders; each role has required and allowed ones
(``ROLE_PLACEHOLDERS``). Score bands are ``{"scores": "8-9", "text": ...}`` and must cover 0..10 once each.
Anything malformed raises :class:`RecipeError` with one line naming the file and the field.
"""
from __future__ import annotations

import hashlib
import json
import os
import string
from dataclasses import dataclass, field
from pathlib import Path

RECIPE_FILES = ("recipe.json", "categories.json", "seeds.json", "rubrics.json", "templates.json")

# role -> (required placeholders, allowed placeholders)
ROLE_PLACEHOLDERS: dict[str, tuple[frozenset, frozenset]] = {
    "proposer": (frozenset({"category"}), frozenset({"category", "rule", "examples"})),
    "solver": (frozenset({"prompt"}), frozenset({"prompt", "category"})),
    "judge": (frozenset({"prompt"}), frozenset({"prompt", "category", "rubric", "rule"})),
    "caption": (frozenset(), frozenset({"category"})),
    "reflection": (frozenset({"prompt"}), frozenset({"prompt", "category"})),
    "rate_prompt": (frozenset({"prompt"}), frozenset({"prompt", "category", "rule"})),
}
LAYOUT_PLACEHOLDERS: dict[str, tuple[frozenset, frozenset]] = {
    "header": (frozenset(), frozenset({"category", "rubric"})),
    "criterion": (frozenset({"text"}), frozenset({"text", "name", "points", "level"})),
    "band": (frozenset({"scores", "text"}), frozenset({"scores", "text"})),
    "bands": (frozenset({"bands"}), frozenset({"bands"})),
}
CHECKS = {  # rule check -> type of its parameter
    "min_words": int, "max_words": int, "max_chars": int, "require_any": list, "forbid_any": list,
    "require_quote": bool, "max_quote_words": int, "max_quote_chars": int, "require_count": bool, "max_count": int,
}
REPLY_FORMATS = {"proposer": ("text", "json"), "judge": ("score_line", "json")}
CPR_KINDS = ("t2i", "caption", "judgement", "reflection")


class RecipeError(ValueError):
    """A malformed recipe; the message is one line naming the file and the field."""


def _fail(file: str, field_name: str, why: str):
    raise RecipeError(f"{file}: field '{field_name}': {why}")


@dataclass(frozen=True)
class Criterion:
    name: str
    text: str
    points: int | None = None
    level: str | None = None  # e.g. "primary" / "secondary"


@dataclass(frozen=True)
class Rubric:
    name: str
    criteria: tuple[Criterion, ...]
    notes: tuple[str, ...]
    bands: tuple[tuple[str, str], ...]  # (scores "8-9", text), high to low as written


@dataclass(frozen=True)
class Category:
    name: str
    share: float
    rule: str
    rubric: str
    checks: dict
    seeds: tuple[str, ...]


@dataclass(frozen=True)
class Thresholds:
    keep_min_best: int = 7  # a prompt is kept when its best score reaches this
    reflection_min_best: int = 9
    reflection_min_gap: int = 3  # best - worst


@dataclass(frozen=True)
class ProposerSettings:
    temperature: float = 0.8
    max_tokens: int = 64
    num_examples: int = 3  # few-shot examples shown per request
    max_attempts: int = 4  # requests per prompt slot before the slot is given up
    max_duplicates_in_row: int = 64  # a category that yields this many rejected proposals in a row is stopped
    near_duplicate: float | None = 0.9  # character 3-gram Jaccard at or above which a prompt is a near-duplicate
    reply: str = "text"  # "text": the reply is the prompt; "json": {"prompt": ...}


@dataclass(frozen=True)
class SolverSettings:
    rollouts: int = 8
    cfg_scale: tuple[float, float] = (3.0, 8.0)  # evenly spread over the rollouts, first to last
    temperature: float = 1.0  # VQ models (Janus): sampling of the image tokens
    # Flow-matching models (BAGEL), null: the model's default (ImageGenParams); a VQ model draws at its fixed size
    # and takes none of them
    height: int | None = None
    width: int | None = None
    num_timesteps: int | None = None
    timestep_shift: float | None = None
    cfg_img_scale: float | None = None
    cfg_interval: tuple[float, float] | None = None  # (low, high]: the flow times at which CFG applies
    cfg_renorm_min: float | None = None
    cfg_renorm_type: str | None = None

    def cfg_scales(self) -> list[float]:
        lo, hi = self.cfg_scale
        if self.rollouts == 1:
            return [lo]
        return [round(lo + (hi - lo) * i / (self.rollouts - 1), 6) for i in range(self.rollouts)]


@dataclass(frozen=True)
class JudgeSettings:
    max_tokens: int = 128
    temperature: float = 0.0
    reply: str = "score_line"  # what the template asks for; the parser accepts both forms either way
    logprobs: int | None = None  # top-k logprobs per token: an expected score from the score token
    # reply "json" only: the engine constrains the reply to {"analysis": at most analysis_max_chars characters,
    # "score": an integer 0..10} (SamplingParams.json_schema, needs xgrammar), for models that do not keep the form
    constrained: bool = False
    analysis_max_chars: int = 400


@dataclass(frozen=True)
class Recipe:
    """A loaded, validated recipe. Render role prompts with the ``render_*`` methods."""

    name: str
    path: str
    description: str
    categories: dict[str, Category]
    rubrics: dict[str, Rubric]
    templates: dict  # role -> template str (caption: a tuple of variants)
    layout: dict  # rubric layout and examples layout
    thresholds: Thresholds
    mix: dict[str, float]  # CPR kind -> samples per kept prompt (t2i 1.0)
    caption_cap_per_category: float | None  # caption samples of a category at most this share of its target
    proposer: ProposerSettings
    solver: SolverSettings
    judge: JudgeSettings
    system_prompt: str | None  # for understanding requests; None: the model's default
    digest: str = field(default="", compare=False)  # sha256 over the files: a run records which recipe made it
    files: dict = field(default_factory=dict, compare=False)  # file name -> the bytes it was loaded from

    def category(self, name: str) -> Category:
        if name not in self.categories:
            raise KeyError(f"recipe {self.name!r} has no category {name!r}")
        return self.categories[name]

    def render_rubric(self, category: str) -> str:
        c = self.category(category)
        rubric, lay = self.rubrics[c.rubric], self.layout
        lines = [lay["header"].format(category=category, rubric=rubric.name)] if lay["header"] else []
        lines += [lay["criterion"].format(name=k.name, text=k.text, points=k.points, level=k.level)
                  for k in rubric.criteria]
        lines += list(rubric.notes)
        bands = lay["band_separator"].join(lay["band"].format(scores=s, text=t) for s, t in rubric.bands)
        lines.append(lay["bands"].format(bands=bands))
        return "\n".join(lines)

    def render_proposer(self, category: str, examples: list[str]) -> str:
        c = self.category(category)
        shown = self.layout["example_separator"].join(self.layout["example"].format(example=e) for e in examples)
        return self.templates["proposer"].format(category=category, rule=c.rule, examples=shown)

    def render_solver(self, category: str, prompt: str) -> str:
        return self.templates["solver"].format(prompt=prompt, category=category)

    def render_judge(self, category: str, prompt: str) -> str:
        fields_used = _placeholders(self.templates["judge"])
        rubric = self.render_rubric(category) if "rubric" in fields_used else ""
        return self.templates["judge"].format(prompt=prompt, category=category, rubric=rubric,
                                              rule=self.category(category).rule)

    def render_caption(self, category: str, variant: int = 0) -> str:
        variants = self.templates["caption"]
        return variants[variant % len(variants)].format(category=category)

    def render_reflection(self, category: str, prompt: str) -> str:
        return self.templates["reflection"].format(prompt=prompt, category=category)

    def render_rate_prompt(self, category: str, prompt: str) -> str | None:
        template = self.templates.get("rate_prompt")
        return None if template is None else template.format(prompt=prompt, category=category,
                                                             rule=self.category(category).rule)


def builtin_dir() -> Path:
    """Where the shipped recipes live (``unicorn/recipes``)."""
    return Path(__file__).resolve().parents[1] / "recipes"


def builtin_recipes() -> list[str]:
    return sorted(p.name for p in builtin_dir().iterdir() if (p / "recipe.json").is_file())


def resolve_recipe_path(name_or_dir: str | os.PathLike) -> Path:
    """A directory path as given, else the name of a shipped recipe."""
    path = Path(name_or_dir)
    if path.is_dir():
        return path
    builtin = builtin_dir() / str(name_or_dir)
    if builtin.is_dir():
        return builtin
    raise RecipeError(f"recipe {str(name_or_dir)!r}: neither a directory nor a shipped recipe "
                      f"({', '.join(builtin_recipes())})")


def load_recipe(name_or_dir: str | os.PathLike, settings: dict | None = None) -> Recipe:
    """Loads and validates a recipe by shipped name (``toyworld``, ``unicorn-official``) or directory.

    ``settings`` ({"proposer" | "solver" | "judge": {field: value}}, e.g. from the command line) are laid over
    recipe.json's sections before validation; ``Recipe.files`` and the digest then hold that edited recipe.json,
    so a run that keeps the recipe keeps what it ran with."""
    root = resolve_recipe_path(name_or_dir)
    raw, digest, files_read = {}, hashlib.sha256(), {}
    for name in RECIPE_FILES:
        path = root / name
        if not path.is_file():
            raise RecipeError(f"{path}: missing (a recipe directory needs {', '.join(RECIPE_FILES)})")
        data = path.read_bytes()
        if name == "recipe.json" and settings:
            data = _with_settings(path, data, settings)
        files_read[name] = data
        digest.update(name.encode() + b"\0" + data + b"\0")
        try:
            raw[name] = json.loads(data.decode("utf-8"))
        except (UnicodeDecodeError, json.JSONDecodeError) as err:
            raise RecipeError(f"{path}: not valid JSON ({getattr(err, 'msg', err)}"
                              f"{f' at line {err.lineno} column {err.colno}' if hasattr(err, 'lineno') else ''})"
                              ) from None
        if not isinstance(raw[name], dict):
            raise RecipeError(f"{path}: must hold a JSON object, got {type(raw[name]).__name__}")
    files = {name: str(root / name) for name in RECIPE_FILES}
    rubrics = _rubrics(files["rubrics.json"], raw["rubrics.json"])
    categories = _categories(files, raw, rubrics)
    templates, layout = _templates(files["templates.json"], raw["templates.json"])
    top = raw["recipe.json"]
    f = files["recipe.json"]
    _known(f, "", top, {"name", "description", "thresholds", "mix", "caption_cap_per_category", "proposer", "solver",
                        "judge", "system_prompt"})
    name = _get(f, "name", top, str)
    mix = _get(f, "mix", top, dict)
    for kind, value in mix.items():
        if kind not in CPR_KINDS:
            _fail(f, f"mix.{kind}", f"unknown CPR kind (one of {', '.join(CPR_KINDS)})")
        if not _is_number(value) or value < 0:
            _fail(f, f"mix.{kind}", f"must be a number >= 0 (samples per kept prompt), got {value!r}")
    cap = top.get("caption_cap_per_category")
    if cap is not None and (not _is_number(cap) or not 0 < cap <= 1):
        _fail(f, "caption_cap_per_category", f"must be null or a share in (0, 1], got {cap!r}")
    system_prompt = top.get("system_prompt")
    if system_prompt is not None and not isinstance(system_prompt, str):
        _fail(f, "system_prompt", "must be a string or null")
    thresholds = _settings(f, "thresholds", top, Thresholds)
    for k in ("keep_min_best", "reflection_min_best"):
        if not 0 <= getattr(thresholds, k) <= 10:
            _fail(f, f"thresholds.{k}", "must be a score in 0..10")
    proposer = _settings(f, "proposer", top, ProposerSettings)
    solver = _settings(f, "solver", top, SolverSettings)
    judge = _settings(f, "judge", top, JudgeSettings)
    for role, settings in (("proposer", proposer), ("judge", judge)):
        if settings.reply not in REPLY_FORMATS[role]:
            _fail(f, f"{role}.reply", f"must be one of {', '.join(REPLY_FORMATS[role])}, got {settings.reply!r}")
    if proposer.near_duplicate is not None and not 0 < proposer.near_duplicate <= 1:
        _fail(f, "proposer.near_duplicate", "must be null or in (0, 1]")
    if solver.rollouts < 1:
        _fail(f, "solver.rollouts", "must be >= 1")
    if len(solver.cfg_scale) != 2 or not all(_is_number(v) and v >= 0 for v in solver.cfg_scale):
        _fail(f, "solver.cfg_scale", "must be [first, last] scales >= 0")
    object.__setattr__(solver, "cfg_scale", tuple(solver.cfg_scale))
    if solver.cfg_interval is not None:
        object.__setattr__(solver, "cfg_interval", tuple(float(v) for v in solver.cfg_interval))
    if judge.constrained and judge.reply != "json":
        _fail(f, "judge.constrained", f"needs judge.reply \"json\" (the constrained form), got {judge.reply!r}")
    if judge.analysis_max_chars < 1:
        _fail(f, "judge.analysis_max_chars", "must be >= 1")
    return Recipe(name=name, path=str(root), description=top.get("description", ""), categories=categories,
                  rubrics=rubrics, templates=templates, layout=layout, thresholds=thresholds,
                  mix={k: float(mix.get(k, 0.0)) for k in CPR_KINDS}, caption_cap_per_category=cap,
                  proposer=proposer, solver=solver, judge=judge, system_prompt=system_prompt,
                  digest=digest.hexdigest(), files=files_read)


SETTING_SECTIONS = ("proposer", "solver", "judge")


def _with_settings(path: Path, data: bytes, settings: dict) -> bytes:
    """recipe.json's bytes with ``settings`` laid over its role sections (validated afterwards, as written)."""
    try:
        top = json.loads(data.decode("utf-8"))
    except (UnicodeDecodeError, json.JSONDecodeError):
        return data  # load_recipe reports it
    for section, values in settings.items():
        if section not in SETTING_SECTIONS:
            raise RecipeError(f"{path}: settings for unknown section {section!r} "
                              f"(one of {', '.join(SETTING_SECTIONS)})")
        if not isinstance(top.get(section, {}), dict):
            return data
        top[section] = {**top.get(section, {}), **values}
    return (json.dumps(top, indent=2, ensure_ascii=False) + "\n").encode("utf-8")


# ---- validation helpers -------------------------------------------------------------------------------------
def _is_number(v) -> bool:
    return isinstance(v, (int, float)) and not isinstance(v, bool)


def _type_ok(value, kind) -> bool:
    if kind is float:
        return _is_number(value)
    if kind is int:
        return isinstance(value, int) and not isinstance(value, bool)
    return isinstance(value, kind)


def _get(file: str, key: str, obj: dict, kind, prefix: str = ""):
    if key not in obj:
        _fail(file, prefix + key, "missing")
    value = obj[key]
    if not _type_ok(value, kind):
        _fail(file, prefix + key, f"must be {kind.__name__}, got {type(value).__name__}")
    return value


def _known(file: str, prefix: str, obj: dict, allowed: set) -> None:
    for key in obj:
        if key not in allowed:
            _fail(file, prefix + key, f"unknown field (known: {', '.join(sorted(allowed))})")


def _settings(file: str, key: str, obj: dict, cls):
    """A settings dataclass from an optional sub-object; every given field type-checked."""
    given = obj.get(key, {})
    if not isinstance(given, dict):
        _fail(file, key, f"must be an object, got {type(given).__name__}")
    defaults = cls()
    _known(file, key + ".", given, set(defaults.__dataclass_fields__))
    for name, value in given.items():
        default = getattr(defaults, name)
        if value is None and default is None or name == "near_duplicate" and value is None:
            continue
        if name in OPTIONAL_SETTINGS:
            kind, why = OPTIONAL_SETTINGS[name]
            if not (_type_ok(value, kind) and _setting_ok(name, value)):
                _fail(file, f"{key}.{name}", f"must be null or {why}, got {value!r}")
            continue
        kind = list if isinstance(default, tuple) else float if isinstance(default, float) else type(default)
        if not _type_ok(value, kind):
            _fail(file, f"{key}.{name}", f"must be {kind.__name__}, got {value!r}")
    return cls(**given)


# settings whose default is null: field -> (type, what a value must be)
OPTIONAL_SETTINGS = {
    "logprobs": (int, "an integer >= 0"), "height": (int, "an integer >= 1 (pixels)"),
    "width": (int, "an integer >= 1 (pixels)"), "num_timesteps": (int, "an integer >= 2"),
    "timestep_shift": (float, "a number > 0"), "cfg_img_scale": (float, "a number >= 0"),
    "cfg_interval": (list, "[low, high] with 0 <= low <= high <= 1"), "cfg_renorm_min": (float, "a number in [0, 1]"),
    "cfg_renorm_type": (str, "one of global, channel, text_channel"),
}


def _setting_ok(name: str, value) -> bool:
    if name == "cfg_interval":
        return len(value) == 2 and all(map(_is_number, value)) and 0 <= value[0] <= value[1] <= 1
    if name == "cfg_renorm_type":
        return value in ("global", "channel", "text_channel")
    if isinstance(value, bool):
        return False
    low = {"logprobs": 0, "height": 1, "width": 1, "num_timesteps": 2, "cfg_img_scale": 0, "cfg_renorm_min": 0}
    if name == "timestep_shift":
        return value > 0
    return value >= low[name] and (name != "cfg_renorm_min" or value <= 1)


def _placeholders(template: str) -> set[str]:
    try:
        return {name for _, name, _, _ in string.Formatter().parse(template) if name is not None}
    except ValueError as err:
        raise ValueError(f"bad braces ({err}); write literal braces as {{{{ and }}}}") from None


def _check_template(file: str, field_name: str, template, required: frozenset, allowed: frozenset) -> None:
    if not isinstance(template, str):
        _fail(file, field_name, f"must be a string, got {type(template).__name__}")
    try:
        names = _placeholders(template)
    except ValueError as err:
        _fail(file, field_name, str(err))
    for name in sorted(names):
        if name == "" or not name.isidentifier():
            _fail(file, field_name, f"placeholder {{{name}}} must be named")
        if name not in allowed:
            _fail(file, field_name, f"unknown placeholder {{{name}}} (allowed: "
                                    f"{', '.join('{' + a + '}' for a in sorted(allowed))})")
    for name in sorted(required - names):
        _fail(file, field_name, f"missing placeholder {{{name}}}")


def _templates(file: str, raw: dict) -> tuple[dict, dict]:
    _known(file, "", raw, set(ROLE_PLACEHOLDERS) | {"rubric_layout", "examples_layout"})
    templates = {}
    for role, (required, allowed) in ROLE_PLACEHOLDERS.items():
        if role not in raw:
            if role == "rate_prompt":
                continue  # optional: without it, a prompt's rating is its best judged score
            _fail(file, role, "missing")
        value = raw[role]
        if role == "caption":
            variants = [value] if isinstance(value, str) else value
            if not isinstance(variants, list) or not variants:
                _fail(file, role, "must be a string or a non-empty list of strings")
            for i, v in enumerate(variants):
                _check_template(file, f"{role}[{i}]", v, required, allowed)
            templates[role] = tuple(variants)
        elif value is None and role == "rate_prompt":
            continue
        else:
            _check_template(file, role, value, required, allowed)
            templates[role] = value
    lay = _get(file, "rubric_layout", raw, dict)
    _known(file, "rubric_layout.", lay, set(LAYOUT_PLACEHOLDERS) | {"band_separator"})
    layout = {}
    for key, (required, allowed) in LAYOUT_PLACEHOLDERS.items():
        value = _get(file, key, lay, str, "rubric_layout.")
        _check_template(file, f"rubric_layout.{key}", value, required, allowed)
        layout[key] = value
    layout["band_separator"] = _get(file, "band_separator", lay, str, "rubric_layout.")
    ex = raw.get("examples_layout", {"example": "- {example}", "separator": "\n"})
    if not isinstance(ex, dict):
        _fail(file, "examples_layout", "must be an object")
    _known(file, "examples_layout.", ex, {"example", "separator"})
    layout["example"] = _get(file, "example", ex, str, "examples_layout.")
    _check_template(file, "examples_layout.example", layout["example"], frozenset({"example"}), frozenset({"example"}))
    layout["example_separator"] = _get(file, "separator", ex, str, "examples_layout.")
    return templates, layout


def _band_range(file: str, field_name: str, scores) -> tuple[int, int]:
    if not isinstance(scores, str):
        _fail(file, field_name, f"must be a score or range such as \"8-9\", got {scores!r}")
    parts = scores.split("-")
    try:
        lo, hi = (int(parts[0]), int(parts[-1])) if len(parts) <= 2 else (None, None)
    except ValueError:
        lo = hi = None
    if lo is None or not 0 <= lo <= hi <= 10:
        _fail(file, field_name, f"must be a score or range within 0..10 such as \"8-9\", got {scores!r}")
    return lo, hi


def _bands(file: str, prefix: str, raw) -> tuple[tuple[str, str], ...]:
    if not isinstance(raw, list) or not raw:
        _fail(file, prefix, "must be a non-empty list of {\"scores\", \"text\"}")
    covered: list[int] = []
    bands = []
    for i, band in enumerate(raw):
        name = f"{prefix}[{i}]"
        if not isinstance(band, dict):
            _fail(file, name, "must be an object {\"scores\", \"text\"}")
        _known(file, name + ".", band, {"scores", "text"})
        lo, hi = _band_range(file, f"{name}.scores", band.get("scores"))
        covered += range(lo, hi + 1)
        bands.append((band["scores"], _get(file, "text", band, str, name + ".")))
    if sorted(covered) != list(range(11)):
        twice = sorted({s for s in covered if covered.count(s) > 1})
        missing = sorted(set(range(11)) - set(covered))
        _fail(file, prefix, f"bands must cover every score 0..10 once (missing {missing}, repeated {twice})")
    return tuple(bands)


def _rubrics(file: str, raw: dict) -> dict[str, Rubric]:
    _known(file, "", raw, {"notes", "default_bands", "rubrics"})
    notes = raw.get("notes", [])
    if not isinstance(notes, list) or not all(isinstance(n, str) for n in notes):
        _fail(file, "notes", "must be a list of strings")
    default_bands = _bands(file, "default_bands", raw["default_bands"]) if "default_bands" in raw else None
    rubrics = {}
    for name, r in _get(file, "rubrics", raw, dict).items():
        prefix = f"rubrics.{name}"
        if not isinstance(r, dict):
            _fail(file, prefix, "must be an object")
        _known(file, prefix + ".", r, {"criteria", "notes", "bands"})
        criteria = []
        raw_criteria = _get(file, "criteria", r, list, prefix + ".")
        if not raw_criteria:
            _fail(file, f"{prefix}.criteria", "must not be empty")
        for i, c in enumerate(raw_criteria):
            cname = f"{prefix}.criteria[{i}]"
            if not isinstance(c, dict):
                _fail(file, cname, "must be an object {\"name\", \"text\", \"points\"?, \"level\"?}")
            _known(file, cname + ".", c, {"name", "text", "points", "level"})
            points = c.get("points")
            if points is not None and not (_type_ok(points, int) and 0 <= points <= 10):
                _fail(file, f"{cname}.points", f"must be an integer in 0..10 or absent, got {points!r}")
            criteria.append(Criterion(_get(file, "name", c, str, cname + "."), _get(file, "text", c, str, cname + "."),
                                      points, c.get("level")))
        given_points = [c.points for c in criteria if c.points is not None]
        if given_points and (len(given_points) != len(criteria) or sum(given_points) != 10):
            _fail(file, f"{prefix}.criteria", "points, when given, must be on every criterion and sum to 10")
        own_notes = r.get("notes", [])
        if not isinstance(own_notes, list) or not all(isinstance(n, str) for n in own_notes):
            _fail(file, f"{prefix}.notes", "must be a list of strings")
        if "bands" in r:
            bands = _bands(file, f"{prefix}.bands", r["bands"])
        elif default_bands is not None:
            bands = default_bands
        else:
            _fail(file, f"{prefix}.bands", "missing (and no default_bands)")
        rubrics[name] = Rubric(name, tuple(criteria), tuple(notes) + tuple(own_notes), bands)
    if not rubrics:
        _fail(file, "rubrics", "must name at least one rubric")
    return rubrics


def _categories(files: dict, raw: dict, rubrics: dict[str, Rubric]) -> dict[str, Category]:
    f = files["categories.json"]
    _known(f, "", raw["categories.json"], {"categories", "shares"})
    cats = _get(f, "categories", raw["categories.json"], dict)
    if not cats:
        _fail(f, "categories", "must name at least one category")
    shares = _get(f, "shares", raw["categories.json"], dict)
    for name, share in shares.items():
        if name not in cats:
            _fail(f, f"shares.{name}", f"unknown category (categories has {', '.join(cats)})")
        if not _is_number(share) or share <= 0:
            _fail(f, f"shares.{name}", f"must be a number > 0, got {share!r}")
    seeds_file, seeds = files["seeds.json"], raw["seeds.json"]
    for name in seeds:
        if name not in cats:
            _fail(seeds_file, name, f"unknown category (categories.json has {', '.join(cats)})")
    out = {}
    for name, c in cats.items():
        prefix = f"categories.{name}"
        if not isinstance(c, dict):
            _fail(f, prefix, "must be an object")
        _known(f, prefix + ".", c, {"rule", "rubric", "checks"})
        if name not in shares:
            _fail(f, f"shares.{name}", "missing (every category needs a target share)")
        rubric = _get(f, "rubric", c, str, prefix + ".")
        if rubric not in rubrics:
            _fail(f, f"{prefix}.rubric", f"unknown rubric {rubric!r} (rubrics.json has {', '.join(rubrics)})")
        checks = c.get("checks", {})
        if not isinstance(checks, dict):
            _fail(f, f"{prefix}.checks", "must be an object")
        for check, value in checks.items():
            if check not in CHECKS:
                _fail(f, f"{prefix}.checks.{check}", f"unknown check (known: {', '.join(CHECKS)})")
            if not _type_ok(value, CHECKS[check]):
                _fail(f, f"{prefix}.checks.{check}", f"must be {CHECKS[check].__name__}, got {value!r}")
        examples = seeds.get(name, [])
        if not isinstance(examples, list) or not all(isinstance(s, str) and s.strip() for s in examples):
            _fail(seeds_file, name, "must be a list of non-empty prompts")
        out[name] = Category(name, float(shares[name]), _get(f, "rule", c, str, prefix + "."), rubric, dict(checks),
                             tuple(examples))
    total = sum(c.share for c in out.values())
    if abs(total - 1.0) > 1e-6:
        _fail(f, "shares", f"must sum to 1, they sum to {total:.6g}")
    return out
