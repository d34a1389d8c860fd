"""``unicorn selfplay``: open (or resume) a run directory, drive the engine, then write the rollouts table, the CPR
data set and the summary from the completed epochs."""
from __future__ import annotations

import json
import os
import shutil
import tempfile
from collections import Counter
from dataclasses import replace
from pathlib import Path

from unicorn.cpr.shards import DatasetWriter
from unicorn.selfplay import workers as workers_mod
from unicorn.selfplay.cpr_builder import iter_records, plan_records, select
from unicorn.selfplay.driver import SelfPlayConfig, SelfPlayDriver, SelfPlayError
from unicorn.selfplay.recipe import RECIPE_FILES, Recipe, load_recipe
from unicorn.selfplay.selection import apply_rule, check_rule
from unicorn.selfplay.store import RunDir, RunDirError, atomic_write_bytes, atomic_write_json, model_digest


def run_config(model_path: str, recipe: Recipe, cfg: SelfPlayConfig, device: str, dtype: str) -> dict:
    """What must match for a directory to be resumed."""
    return {"model": os.path.abspath(model_path), "model_digest": model_digest(model_path), "recipe": recipe.name,
            "recipe_digest": recipe.digest, "num_prompts": cfg.num_prompts, "epoch_size": cfg.epoch_size,
            "seed": cfg.seed, "device": str(device), "dtype": str(dtype)}


def selfplay(model_path: str, recipe_name: str, cfg: SelfPlayConfig, out_dir: str, *, device: str = "cpu",
             dtype: str = "float32", num_kv_blocks: int | None = None, progress: bool = True, log=print,
             workers: int | None = None, backend: str = "torchrun", settings: dict | None = None,
             engine=None) -> dict:
    """Runs (or resumes) self-play into ``out_dir`` and returns the summary. ``settings``: role settings laid over
    the recipe's (``load_recipe``; the run keeps the recipe so edited, and its digest must match on resume).

    ``backend="torchrun"``: every process under torchrun runs this with its own engine (``workers``, if given, must
    equal the world size). ``backend="ray"``: this process starts ``workers`` Ray actors, one engine each. Either
    way the workers' epoch parts are merged and the data set written once, the same bytes as one worker's.

    ``engine``: an idle engine to play on in place of a new one (one worker only; ``unicorn improve`` keeps one
    between rounds), holding ``model_path``'s weights and built with the same device, dtype and KV blocks; it is
    reseeded and its prefix cache dropped first, so the run equals one on a fresh engine."""
    if backend not in ("torchrun", "ray"):
        raise ValueError(f"backend must be 'torchrun' or 'ray', got {backend!r}")
    if engine is not None and (backend == "ray" or (workers or 1) > 1):
        raise ValueError("engine=: a kept engine plays one worker in this process, not under Ray or W workers")
    recipe = load_recipe(recipe_name, settings)
    run = RunDir(out_dir)
    job = dict(model_path=model_path, recipe_name=recipe_name, cfg=cfg, out_dir=out_dir, device=device, dtype=dtype,
               num_kv_blocks=num_kv_blocks, settings=settings)
    fresh = not (run.root / "run.json").exists()
    if backend == "ray":
        world = workers or 1
        _open(run, _config(model_path, recipe, cfg, device, dtype, world), recipe)
        try:
            everyone = workers_mod.run_ray_workers(job, world)
        except Exception as err:  # Ray wraps the actor's error
            if fresh and isinstance(getattr(err, "cause", err), SelfPlayError):
                run.remove_unstarted()
            raise
        return _finish(run, recipe, cfg, model_path, everyone, world, log)
    rank, world = workers_mod.env_world()
    if workers is not None and workers != world:
        if world == 1:
            raise ValueError(f"workers={workers}: start one process per worker under torchrun "
                             f"(unicorn selfplay --workers {workers} does so itself), or use backend='ray'")
        raise ValueError(f"workers={workers} but torchrun started {world} processes")
    workers_mod.init(world)
    try:
        if rank == 0:
            _open(run, _config(model_path, recipe, cfg, device, dtype, world), recipe)
        workers_mod.barrier(world)
        quiet = rank != 0
        try:
            mine = work(**job, rank=rank, world=world, progress=progress and not quiet,
                        log=(lambda *_: None) if quiet else log, engine=engine)
        except SelfPlayError:  # refused before anything was drawn (the driver's preflight)
            if fresh and rank == 0:
                run.remove_unstarted()
            raise
        everyone = workers_mod.gather(mine, world)
        if rank == 0:
            summary = _finish(run, recipe, cfg, model_path, everyone, world, log)
        workers_mod.barrier(world)
        if rank != 0:
            summary = json.loads((run.root / "summary.json").read_text())
    finally:
        workers_mod.shutdown(world)
    return summary


def _config(model_path: str, recipe: Recipe, cfg: SelfPlayConfig, device: str, dtype: str, world: int) -> dict:
    config = run_config(model_path, recipe, cfg, device, dtype)
    if world > 1:
        config["workers"] = world  # its epoch parts are split by this world size
    return config


def _open(run: RunDir, config: dict, recipe: Recipe) -> None:
    """Creates or checks the run directory (once, before any worker starts)."""
    run.open(config)
    for name in RECIPE_FILES:  # the run keeps the recipe that made it (unicorn cpr reads it back)
        atomic_write_bytes(run.root / "recipe" / name, recipe.files[name])


def work(model_path: str, recipe_name: str, cfg: SelfPlayConfig, out_dir: str, *, device: str, dtype: str,
         num_kv_blocks: int | None, rank: int, world: int, progress: bool = False, log=print,
         settings: dict | None = None, engine=None) -> dict:
    """One worker's share of an opened run, on its own engine (or ``engine``, kept by the caller): its counters and
    engine figures."""
    from unicorn.engine.llm_engine import Engine

    recipe = load_recipe(recipe_name, settings)
    run = RunDir(out_dir)  # opened by _open before any worker started
    if engine is not None:
        if world > 1:
            raise ValueError("engine=: a kept engine plays one worker only")
        engine.reseed(cfg.seed)  # as Engine(..., seed=cfg.seed) below
        engine.reset_prefix_cache()
        return _play(engine, recipe, cfg, run, progress, log, rank, world)
    if str(device) == "cuda" and world > 1 and "LOCAL_RANK" in os.environ:  # torchrun: one GPU per rank
        device = f"cuda:{os.environ['LOCAL_RANK']}"
    kv_memory = None
    if num_kv_blocks is None and world > 1:  # the workers share the machine: each takes its share of one budget
        import torch

        from unicorn.engine.kv_cache import default_kv_budget

        kv_memory = default_kv_budget(torch.device(device), 0.85) // world
    with Engine(str(model_path), device=device, dtype=dtype, num_kv_blocks=num_kv_blocks, kv_cache_memory=kv_memory,
                seed=cfg.seed) as engine:
        return _play(engine, recipe, cfg, run, progress, log, rank, world)


def _play(engine, recipe: Recipe, cfg: SelfPlayConfig, run: RunDir, progress: bool, log, rank: int,
          world: int) -> dict:
    before = replace(engine.stats)  # a kept engine's figures count from earlier stages too
    counters = SelfPlayDriver(engine, recipe, cfg, run, progress=progress, log=log, rank=rank, world=world).run()
    stats = engine.stats
    engine_stats = {"steps": stats.num_steps - before.num_steps,
                    "batched_tokens": stats.num_batched_tokens - before.num_batched_tokens,
                    "preemptions": stats.num_preemptions - before.num_preemptions,
                    "prefix_hit_tokens": stats.prefix_hit_tokens - before.prefix_hit_tokens,
                    "prefix_query_tokens": stats.prefix_query_tokens - before.prefix_query_tokens,
                    "kv_blocks": engine.block_manager.num_blocks, "kernels": engine.kernels}
    return {"counters": counters, "engine": engine_stats}


def _finish(run: RunDir, recipe: Recipe, cfg: SelfPlayConfig, model_path: str, everyone: list, world: int,
            log) -> dict:
    """After every worker is done: merge the parts, build the data set, write the timing."""
    if world > 1:
        for k in range(cfg.num_epochs):
            run.merge_parts(k, world)
        shutil.rmtree(run.parts_dir(), ignore_errors=True)
    summary = finalize(run, recipe, cfg, source_model=str(model_path))
    wall = max(e["counters"].image_s for e in everyone)
    images = sum(e["counters"].images for e in everyone)
    judgements = sum(e["counters"].judgements for e in everyone)
    timing = {"wall_s": round(wall, 3), "images": images, "judgements": judgements,
              "proposals": everyone[0]["counters"].proposals, "workers": world,
              "images_per_s": round(images / max(wall, 1e-9), 3),
              "judge_requests_per_s": round(judgements / max(wall, 1e-9), 3), "engine": everyone[0]["engine"]}
    if world > 1:
        timing["engine_per_worker"] = [e["engine"] for e in everyone]
    atomic_write_json(run.root / "timing.json", timing)
    log(format_summary(summary, timing))
    return summary


SHARD_SIZE = 10000  # CPR records per shard


def iter_epochs(run: RunDir, cfg: SelfPlayConfig):
    for k in range(cfg.num_epochs):
        yield run.read_epoch(k)


def _selections(run: RunDir, recipe: Recipe, cfg: SelfPlayConfig, selection: str = "judge", on_slot=None):
    """Every drawn prompt's rejection-sampling decision by ``selection``'s pick, epoch by epoch (one epoch in memory
    at a time)."""
    for data in iter_epochs(run, cfg):
        for s in data["slots"]:
            if on_slot is not None:
                on_slot(s)
            if s["status"] == "done":
                yield apply_rule(selection, select(recipe, cfg.seed, s["prompt_id"], s["category"], s["prompt"],
                                                   s["rollouts"]), cfg.seed)


def finalize(run: RunDir, recipe: Recipe, cfg: SelfPlayConfig, source_model: str | None = None,
             dest: Path | None = None, selection: str = "judge") -> dict:
    """Rollouts table, CPR data set (rejection sampling by the recipe's rules) and summary.json from the epochs,
    written into the run directory, or into ``dest`` (with the images the records use, hard-linked or copied).
    ``selection``: whose pick the records use (selection.py: ``judge``, or ``random`` for the control).

    Streamed in two passes over the epoch files (counts and the rollouts table, then the chosen records into
    per-kind Parquet shards, unicorn/cpr/shards.py), so memory does not grow with the number of prompts; a build
    killed half-way resumes its committed shards."""
    check_rule(selection)
    dest = run.root if dest is None else Path(dest)
    dest.mkdir(parents=True, exist_ok=True)
    histogram, per_category, failures = Counter(), {}, Counter()
    totals = Counter()
    first_error = None
    fd, tmp = tempfile.mkstemp(dir=dest, prefix=".tmp-")
    with os.fdopen(fd, "w", encoding="utf-8") as table:

        def on_slot(s):
            nonlocal first_error
            cat = per_category.setdefault(s["category"], Counter())
            cat["slots"] += 1
            if s["status"] != "done":
                failures[s["reason"]] += 1
                return
            cat["prompts"] += 1
            for r in s["rollouts"]:
                table.write(json.dumps(r, ensure_ascii=False, sort_keys=True) + "\n")
                totals["rollouts"] += 1
                histogram["unparsed" if r["score"] is None else str(r["score"])] += 1
                totals["parse_failures"] += r["score"] is None
                if (r["judge_finish"] or "").startswith("error"):
                    totals["judge_errors"] += 1
                    first_error = first_error or r["judge_finish"]

        def counted(selections):
            for sel in selections:
                per_category[sel.category]["kept"] += sel.kept
                yield sel

        plan = plan_records(recipe, cfg.seed, counted(_selections(run, recipe, cfg, selection, on_slot)), cfg.num_prompts)
    os.chmod(tmp, 0o644)
    os.replace(tmp, dest / "rollouts.jsonl")
    config = {"recipe": recipe.name, "recipe_digest": recipe.digest, "num_prompts": cfg.num_prompts,
              "epoch_size": cfg.epoch_size}
    if selection != "judge":
        config["selection"] = selection
    key = json.dumps({**config, "seed": cfg.seed, "source_model": source_model, "shard_size": SHARD_SIZE},
                     sort_keys=True)
    writer = DatasetWriter(str(dest), shard_size=SHARD_SIZE, shard_format="parquet", per_kind=True, build_key=key)
    for record in iter_records(recipe, cfg.seed, _selections(run, recipe, cfg, selection), plan):
        if dest != run.root:
            for ref in record.images().values():
                if ref.path is not None:
                    _link_or_copy(run.root / ref.path, dest / ref.path)
        writer.add(record)
    manifest = writer.close(source_model=source_model, seed=cfg.seed, config=config,
                            extra_files={"rollouts": "rollouts.jsonl"})
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
        "num_rollouts": totals["rollouts"], "parse_failures": totals["parse_failures"],
        "judge_errors": totals["judge_errors"], "first_judge_error": first_error,
        "cpr_candidates": plan.candidates, "cpr_counts": manifest.counts,
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
