"""``unicorn selfplay``: open (or resume) a run directory, drive the engine, then write the rollouts table, the CPR
data set and the summary from the completed epochs."""
from __future__ import annotations

import json
import os
import shutil
from collections import Counter
from pathlib import Path

from unicorn.cpr.schema import write_dataset
from unicorn.selfplay.cpr_builder import build_records, select
from unicorn.selfplay.driver import SelfPlayConfig, SelfPlayDriver
from unicorn.selfplay.recipe import RECIPE_FILES, Recipe, load_recipe
from unicorn.selfplay.selection import apply_rule, check_rule
from unicorn.selfplay.store import RunDir, RunDirError, atomic_write_bytes, atomic_write_json, model_digest


def run_config(model_path: str, recipe: Recipe, cfg: SelfPlayConfig, device: str, dtype: str) -> dict:
    """What must match for a directory to be resumed."""
    return {"model": os.path.abspath(model_path), "model_digest": model_digest(model_path), "recipe": recipe.name,
            "recipe_digest": recipe.digest, "num_prompts": cfg.num_prompts, "epoch_size": cfg.epoch_size,
            "seed": cfg.seed, "device": str(device), "dtype": str(dtype)}


def selfplay(model_path: str, recipe_name: str, cfg: SelfPlayConfig, out_dir: str, *, device: str = "cpu",
             dtype: str = "float32", num_kv_blocks: int | None = None, progress: bool = True, log=print) -> dict:
    """Runs (or resumes) self-play into ``out_dir`` and returns the summary."""
    from unicorn.engine.llm_engine import Engine

    recipe = load_recipe(recipe_name)
    run = RunDir(out_dir)
    run.open(run_config(model_path, recipe, cfg, device, dtype))
    for name in RECIPE_FILES:  # the run keeps the recipe that made it (unicorn cpr reads it back)
        atomic_write_bytes(run.root / "recipe" / name, (Path(recipe.path) / name).read_bytes())
    with Engine(str(model_path), device=device, dtype=dtype, num_kv_blocks=num_kv_blocks, seed=cfg.seed) as engine:
        counters = SelfPlayDriver(engine, recipe, cfg, run, progress=progress, log=log).run()
        stats = engine.stats
        engine_stats = {"steps": stats.num_steps, "batched_tokens": stats.num_batched_tokens,
                        "preemptions": stats.num_preemptions, "prefix_hit_tokens": stats.prefix_hit_tokens,
                        "prefix_query_tokens": stats.prefix_query_tokens,
                        "kv_blocks": engine.block_manager.num_blocks, "kernels": engine.kernels}
    summary = finalize(run, recipe, cfg, source_model=str(model_path))
    timing = {"wall_s": round(counters.image_s, 3), "images": counters.images, "judgements": counters.judgements,
              "proposals": counters.proposals,
              "images_per_s": round(counters.images / max(counters.image_s, 1e-9), 3),
              "judge_requests_per_s": round(counters.judgements / max(counters.image_s, 1e-9), 3),
              "engine": engine_stats}
    atomic_write_json(run.root / "timing.json", timing)
    log(format_summary(summary, timing))
    return summary


def iter_epochs(run: RunDir, cfg: SelfPlayConfig):
    for k in range(cfg.num_epochs):
        yield run.read_epoch(k)


def finalize(run: RunDir, recipe: Recipe, cfg: SelfPlayConfig, source_model: str | None = None,
             dest: Path | None = None, selection: str = "judge") -> dict:
    """Rollouts table, CPR data set (rejection sampling by the recipe's rules) and summary.json from the epochs,
    written into the run directory, or into ``dest`` (with the images the records use, hard-linked or copied).
    ``selection``: whose pick the records use (selection.py: ``judge``, or ``random`` for the control)."""
    check_rule(selection)
    dest = run.root if dest is None else Path(dest)
    selections, rollout_lines = [], []
    histogram, per_category, failures = Counter(), {}, Counter()
    parse_failures, judge_errors, first_error = 0, 0, None
    for data in iter_epochs(run, cfg):
        for s in data["slots"]:
            cat = per_category.setdefault(s["category"], Counter())
            cat["slots"] += 1
            if s["status"] != "done":
                failures[s["reason"]] += 1
                continue
            cat["prompts"] += 1
            for r in s["rollouts"]:
                rollout_lines.append(json.dumps(r, ensure_ascii=False, sort_keys=True) + "\n")
                histogram["unparsed" if r["score"] is None else str(r["score"])] += 1
                parse_failures += r["score"] is None
                if (r["judge_finish"] or "").startswith("error"):
                    judge_errors += 1
                    first_error = first_error or r["judge_finish"]
            sel = apply_rule(selection, select(recipe, cfg.seed, s["prompt_id"], s["category"], s["prompt"],
                                               s["rollouts"]), cfg.seed)
            cat["kept"] += sel.kept
            selections.append(sel)
    atomic_write_bytes(dest / "rollouts.jsonl", "".join(rollout_lines).encode())
    records, candidates = build_records(recipe, cfg.seed, selections, cfg.num_prompts)
    if dest != run.root:
        for record in records:
            for ref in record.images().values():
                _link_or_copy(run.root / ref.path, dest / ref.path)
    config = {"recipe": recipe.name, "recipe_digest": recipe.digest, "num_prompts": cfg.num_prompts,
              "epoch_size": cfg.epoch_size}
    if selection != "judge":
        config["selection"] = selection
    manifest = write_dataset(str(dest), records, source_model=source_model, seed=cfg.seed, config=config)
    last = run.read_epoch(cfg.num_epochs - 1)["after"]
    drawn = sum(c["prompts"] for c in per_category.values())
    kept = sum(c["kept"] for c in per_category.values())
    summary = {
        "num_slots": cfg.num_prompts, "num_prompts": drawn, "num_kept": kept,
        "acceptance_rate": round(kept / drawn, 4) if drawn else 0.0,
        "per_category": {c: dict(v) for c, v in per_category.items()},
        "failed_slots": dict(failures),
        "stopped_categories": last["stopped"],
        "score_histogram": {k: histogram[k] for k in [str(i) for i in range(11)] + ["unparsed"] if histogram[k]},
        "num_rollouts": len(rollout_lines), "parse_failures": parse_failures, "judge_errors": judge_errors,
        "first_judge_error": first_error,
        "cpr_candidates": candidates, "cpr_counts": manifest.counts,
    }
    if selection != "judge":
        summary["selection"] = selection
    atomic_write_json(dest / "summary.json", summary)
    return summary


def _link_or_copy(src: Path, dst: Path) -> None:
    if dst.exists():
        return
    dst.parent.mkdir(parents=True, exist_ok=True)
    try:
        os.link(src, dst)
    except OSError:
        shutil.copyfile(src, dst)


def rebuild_cpr(run_dir: str, out_dir: str, recipe_name: str | None = None, log=print, selection: str = "judge") -> dict:
    """``unicorn cpr``: the CPR data set of a finished self-play run, rebuilt into ``out_dir`` by a recipe's rules
    and mix (default: the run's own recipe; another one must have the same categories); ``selection="random"``
    builds the control set (random rollouts in place of the judge's picks)."""
    check_rule(selection)
    run = RunDir(run_dir)
    run_file = run.root / "run.json"
    if not run_file.is_file():
        raise RunDirError(f"{run.root}: no run.json, not a self-play run directory")
    config = json.loads(run_file.read_text())["config"]
    cfg = SelfPlayConfig(config["num_prompts"], seed=config["seed"], epoch_size=config["epoch_size"])
    missing = sorted(set(range(cfg.num_epochs)) - run.completed_epochs())
    if missing:
        raise RunDirError(f"{run.root}: epochs {missing[:5]} not written yet (resume the run with unicorn selfplay)")
    own = run.root / "recipe"
    recipe = load_recipe(recipe_name or (own if own.is_dir() else config["recipe"]))
    run_recipe_categories = {s["category"] for s in run.read_epoch(0)["slots"]}
    unknown = sorted(run_recipe_categories - set(recipe.categories))
    if unknown:
        raise RunDirError(f"recipe {recipe.name!r} lacks the run's categories {unknown}")
    out = Path(out_dir)
    if out.resolve() == run.root.resolve():
        raise RunDirError(f"--out {out} is the run directory itself; choose another")
    if out.exists() and any(out.iterdir()) and not (out / "manifest.json").is_file():
        raise RunDirError(f"{out} is not empty and holds no CPR data set: choose another --out")
    summary = finalize(run, recipe, cfg, source_model=config["model"], dest=out, selection=selection)
    log(format_summary(summary))
    return summary


def format_summary(summary: dict, timing: dict | None = None) -> str:
    lines = [f"selfplay: {summary['num_prompts']} of {summary['num_slots']} prompt slots drawn, "
             f"{summary['num_kept']} kept (acceptance {summary['acceptance_rate']:.1%}); "
             f"{summary['num_rollouts']} images, {summary['parse_failures']} without a judge score"]
    if summary["judge_errors"]:
        lines.append(f"  {summary['judge_errors']} judge requests refused by the engine, e.g. "
                     f"{summary['first_judge_error']}")
    lines.append("  per category (slots / prompts / kept): " + ", ".join(
        f"{c} {v.get('slots', 0)}/{v.get('prompts', 0)}/{v.get('kept', 0)}" for c, v in summary["per_category"].items()))
    lines.append("  scores: " + " ".join(f"{k}:{v}" for k, v in summary["score_histogram"].items()))
    if summary["failed_slots"]:
        lines.append("  failed slots: " + ", ".join(f"{k} x{v}" for k, v in summary["failed_slots"].items()))
    if summary["stopped_categories"]:
        lines.append("  stopped (ran dry): " + ", ".join(summary["stopped_categories"]))
    lines.append("  CPR records: " + ", ".join(f"{k} {v}" for k, v in summary["cpr_counts"].items() if v))
    if timing:
        lines.append(f"  {timing['images_per_s']:.2f} images/s, {timing['judge_requests_per_s']:.2f} judge req/s, "
                     f"{timing['wall_s']:.1f}s in the loop")
    return "\n".join(lines)
