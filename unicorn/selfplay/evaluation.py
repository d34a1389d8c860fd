"""Evaluation as a plug-in of ``unicorn improve``: the loop knows this interface only, never a benchmark's internals
(the toy world's oracle stays out of the loop's imports; tests/toyworld/test_oracle_isolation.py checks it).

An evaluator is any object with

    name: str
    describe() -> dict                     its settings (part of the improve run's identity)
    evaluate(model_path, out_dir, log) -> dict
    evaluate_on(engine, model_path, out_dir, log) -> dict | None     optional: the loop's kept engine, awake and
                                           holding model_path's weights; None declines it (the loop then calls
                                           evaluate, which opens an engine of its own, and says so in its log)

and ``evaluate`` returns

    {"metrics": {metric: value},                        headline figures, higher is better
     "per_category": {category: {metric: value}},       optional
     "units": {metric: {unit id: value}}}               per prompt / per question values of each metric, so that two
                                                        models are compared on the same units (paired); a unit id
                                                        "category/..." also gives per-category deltas

Evaluators are named by a built-in short name, a dotted ``module:attribute`` (a class or factory, called with the
``--eval-opt key=value`` options as keyword arguments), or an entry point of group ``unicorn.evaluators``.
"""
from __future__ import annotations

import importlib
import json

ENTRY_POINT_GROUP = "unicorn.evaluators"
# Strings, not imports: the loop must not import what measures it.
BUILTIN = {
    "toyworld": "unicorn.toyworld.model.improve_eval:ToyWorldEvaluator",
    "unicycle": "unicorn.unicycle.evaluator:UniCycleEvaluator",
}


class EvaluatorError(ValueError):
    """An evaluator that cannot be found or built, or a result that breaks the interface."""


def parse_options(pairs: list[str] | None) -> dict:
    """``["prompts_per_category=4", "seeds=[0,1]"]`` -> kwargs; a value is read as JSON when it parses, else kept as
    a string."""
    options = {}
    for pair in pairs or []:
        key, sep, value = pair.partition("=")
        if not sep or not key.strip():
            raise EvaluatorError(f"--eval-opt: expected key=value, got {pair!r}")
        try:
            options[key.strip()] = json.loads(value)
        except json.JSONDecodeError:
            options[key.strip()] = value
    return options


def _resolve(spec: str):
    target = BUILTIN.get(spec, spec)
    if ":" not in target:
        from importlib.metadata import entry_points

        found = [ep for ep in entry_points(group=ENTRY_POINT_GROUP) if ep.name == spec]
        if not found:
            raise EvaluatorError(f"unknown evaluator {spec!r}: use one of {', '.join(BUILTIN)}, a module:attribute, "
                                 f"or an entry point of group {ENTRY_POINT_GROUP!r}")
        return found[0].load()
    module_name, _, attr = target.partition(":")
    try:
        module = importlib.import_module(module_name)
    except ImportError as err:
        raise EvaluatorError(f"evaluator {spec!r}: cannot import {module_name} ({err})") from None
    try:
        return getattr(module, attr)
    except AttributeError:
        raise EvaluatorError(f"evaluator {spec!r}: {module_name} has no {attr!r}") from None


def load_evaluator(spec: str, options: dict | None = None):
    factory = _resolve(spec)
    try:
        evaluator = factory(**(options or {}))
    except TypeError as err:
        raise EvaluatorError(f"evaluator {spec!r}: bad options {options} ({err})") from None
    for attr in ("name", "describe", "evaluate"):
        if not hasattr(evaluator, attr):
            raise EvaluatorError(f"evaluator {spec!r} has no {attr!r} (see unicorn/selfplay/evaluation.py)")
    return evaluator


def is_default_engine(engine, num_kv_blocks: int | None) -> bool:
    """Whether ``engine`` is what ``Engine(path, num_kv_blocks=num_kv_blocks)`` builds (CPU, fp32, that pool; any
    pool for None, which sizes it from free memory): an evaluator that opens such an engine gives the same figures
    on this one, once reseeded and its prefix cache dropped."""
    import torch

    return (engine.device.type == "cpu" and engine.spec.dtype == torch.float32
            and (num_kv_blocks is None or engine.block_manager.num_blocks == num_kv_blocks))


def check_result(name: str, result) -> dict:
    if not isinstance(result, dict) or not isinstance(result.get("metrics"), dict):
        raise EvaluatorError(f"evaluator {name!r} returned no 'metrics' dict")
    for key, value in result["metrics"].items():
        if not isinstance(value, (int, float)) or isinstance(value, bool):
            raise EvaluatorError(f"evaluator {name!r}: metric {key!r} is {value!r}, not a number")
    units = result.get("units", {})
    if not isinstance(units, dict) or not all(isinstance(v, dict) for v in units.values()):
        raise EvaluatorError(f"evaluator {name!r}: 'units' must map metric -> {{unit id: value}}")
    return result


def paired_delta(a: dict, b: dict, samples: int = 2000, seed: int = 0) -> dict | None:
    """Mean of ``b - a`` over the units both have, and its standard error by a bootstrap over those units
    (prompt-paired: both models are scored on the same resampled units). None without common units."""
    common = sorted(set(a) & set(b))
    if not common:
        return None
    import numpy as np

    diffs = np.array([float(b[u]) - float(a[u]) for u in common])
    n = len(diffs)
    mean = float(diffs.mean())
    rng = np.random.default_rng(seed)
    means = np.concatenate([diffs[rng.integers(0, n, (min(256, samples - k), n))].mean(axis=1)
                            for k in range(0, samples, 256)])
    se = float(means.std(ddof=1)) if samples > 1 else float("nan")
    return {"delta": mean, "se": se, "n": n, "z": mean / se if se > 0 else None}


def compare(a: dict, b: dict, samples: int = 2000, seed: int = 0) -> dict:
    """Paired deltas (b - a) per metric with units in both results, overall and per unit-id category prefix."""
    out = {}
    for metric in sorted(set(a.get("units", {})) & set(b.get("units", {}))):
        ua, ub = a["units"][metric], b["units"][metric]
        entry = {"overall": paired_delta(ua, ub, samples, seed)}
        categories = sorted({u.split("/", 1)[0] for u in ua if "/" in u})
        if categories:
            entry["per_category"] = {c: paired_delta({u: v for u, v in ua.items() if u.startswith(c + "/")},
                                                     {u: v for u, v in ub.items() if u.startswith(c + "/")},
                                                     samples, seed) for c in categories}
        out[metric] = entry
    return out
