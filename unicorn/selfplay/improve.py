"""``unicorn improve``: rounds of self-play -> CPR -> train -> export -> evaluate, each round from the last one's export.

    OUT/improve.json                   what made the run (a re-run must match it, else it is refused)
    OUT/round-00/eval/eval.json        the starting model's evaluation: the baseline of every comparison
    OUT/round-RR/selfplay/             ``unicorn selfplay``'s run directory (the model of round RR-1 plays every role)
    OUT/round-RR/cpr/                  the CPR data set (the judge's picks)
    OUT/round-RR/train/                the trainer's run (checkpoints/, metrics.jsonl)
    OUT/round-RR/model/                the exported checkpoint (EMA weights with --ema): round RR+1's model
    OUT/round-RR/eval/eval.json        the evaluator's figures for that model
    OUT/round-RR/control/{cpr,train,model,eval}/   with --control: the same self-play data, random rollouts in place
                                       of the judge's picks (selection.py), trained and evaluated alike
    OUT/round-RR/stages.json           the finished stages; OUT/round-RR/report.{md,json}
    OUT/report.{md,json}, OUT/improve.png

A stage counts as done once stages.json says so; a re-run (after a crash or ``kill -9``) redoes only the others:
self-play resumes its own written epochs, the trainer its checkpoints, and an unfinished CPR / export / evaluation is
removed and redone. Each stage is deterministic, so the result equals an uninterrupted run's. ``--rounds`` is not
part of the identity: a finished run re-run with more rounds continues.

One engine is kept across stages and rounds (``keep_engine``, the default, in one process): it sleeps while the
trainer runs (level 1 on CPU: the KV pool freed; level 2 on a GPU: the weights' device memory too), and wakes with
the export loaded in place (``Engine.update_weights``: every name and shape checked, the prefix cache dropped). Each
stage reseeds it and drops its prefix cache, so the run equals one with a fresh engine per stage (tested). Self-play
under torchrun with several processes, or an evaluator without ``evaluate_on`` (or one that declines the engine),
gets fresh engines instead; the log says so, and OUT/round-RR/timing.json records which and the seconds spent.

The evaluator is a plug-in (evaluation.py); this module never imports a benchmark, nor the toy world's oracle.
"""
from __future__ import annotations

import gc
import json
import shutil
import time
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path

from unicorn.cpr.schema import KINDS
from unicorn.selfplay.driver import SelfPlayError
from unicorn.selfplay.evaluation import check_result, compare, load_evaluator
from unicorn.selfplay.store import RunDirError, atomic_write_json, check_same_run, model_digest

IMPROVE_FORMAT = "unicorn-improve"
IMPROVE_VERSION = 1
ARMS = {"judge": "", "control": "control/"}  # arm -> its subdirectory and stage-name prefix in a round


class StopImprove(Exception):
    """Raised after the stage named by ``stop_after`` (tests and time-boxed jobs: as if killed between stages)."""


@dataclass(frozen=True)
class TrainSettings:
    """The fine-tuning of every round (unicorn train's flags of the same names)."""
    steps: int = 100
    lr: float = 1e-4
    warmup: int = 10
    micro_batch: int = 4
    grad_accum: int = 1
    seq_len: int | None = None  # packed row length; None: the model's context (the toy model's is 512)
    weight_decay: float = 0.0
    betas: tuple = (0.9, 0.95)
    clip: float = 1.0
    cond_dropout: float = 0.1  # as the toy model was pretrained, so that classifier-free guidance keeps working
    ema: float | None = None  # an EMA of the weights, exported in place of the raw ones
    kind_weights: dict = field(default_factory=dict)


@dataclass(frozen=True)
class ImproveConfig:
    model: str
    recipe: str
    num_prompts: int
    seed: int = 0
    epoch_size: int = 64
    train: TrainSettings = field(default_factory=TrainSettings)
    evaluator: str | None = None
    eval_options: dict = field(default_factory=dict)
    control: bool = False
    device: str = "cpu"
    dtype: str = "float32"
    num_kv_blocks: int | None = None
    recipe_settings: dict = field(default_factory=dict)  # role settings over the recipe's (load_recipe)

    def __post_init__(self):
        from unicorn.selfplay.driver import SelfPlayConfig

        SelfPlayConfig(self.num_prompts, seed=self.seed, epoch_size=self.epoch_size)  # checks them
        if self.train.seq_len is None:  # resolved here, so the run's identity names the length it trains at
            from unicorn.training.family import context_length

            object.__setattr__(self, "train", replace(self.train, seq_len=context_length(self.model)))

    def round_seed(self, round_index: int) -> int:
        """Each round draws new rollouts (same slot structure, other seeds)."""
        return self.seed + 1000 * (round_index - 1)


def _identity(cfg: ImproveConfig, recipe, evaluator) -> dict:
    return {"model": str(Path(cfg.model).resolve()), "model_digest": model_digest(cfg.model),
            "recipe": recipe.name, "recipe_digest": recipe.digest, "num_prompts": cfg.num_prompts, "seed": cfg.seed,
            "epoch_size": cfg.epoch_size, "train": json.loads(json.dumps(asdict(cfg.train))),
            "evaluator": cfg.evaluator, "evaluator_settings": evaluator.describe() if evaluator else None,
            "control": cfg.control, "device": cfg.device, "dtype": cfg.dtype, "num_kv_blocks": cfg.num_kv_blocks}


def open_out(out: Path, identity: dict) -> bool:
    """Creates the run or checks that ``out`` holds this same one (True when resuming); one-line refusal otherwise."""
    file = out / "improve.json"
    if file.exists():
        check_same_run(file, IMPROVE_FORMAT, "improve run", identity)
        return True
    if out.exists() and any(out.iterdir()):
        raise RunDirError(f"{out} is not empty and holds no improve.json: choose another --out")
    atomic_write_json(file, {"format": IMPROVE_FORMAT, "version": IMPROVE_VERSION, "config": identity})
    return False


def remove_unstarted(out: Path) -> None:
    """Undoes ``open_out`` for a new run in which no stage finished (e.g. self-play refused its settings up front),
    so that the same --out can take other settings."""
    if any(out.glob("round-*/stages.json")):
        return
    for path in out.glob("round-*/input.json"):
        path.unlink()
    for path in [*out.glob("round-*"), out / "improve.json", out]:
        if path.is_file():
            path.unlink()
        elif path.is_dir() and not any(path.iterdir()):
            path.rmdir()


class Round:
    """One round's directory and its finished stages."""

    def __init__(self, out: Path, index: int):
        self.index, self.dir = index, out / f"round-{index:02d}"
        self.file = self.dir / "stages.json"
        self.stages = json.loads(self.file.read_text()) if self.file.exists() else {}

    def done(self, stage: str) -> bool:
        return stage in self.stages

    def finish(self, stage: str, summary: dict) -> None:
        self.stages[stage] = summary
        atomic_write_json(self.file, self.stages)

    def path(self, arm: str, name: str) -> Path:
        return self.dir / ARMS[arm] / name if ARMS[arm] else self.dir / name


class KeptEngine:
    """The one engine of a run's stages: opened on first use, put to sleep for training, woken holding the weights
    the next stage asks for. ``timing`` collects the seconds each start, sleep and weight load took."""

    def __init__(self, cfg: ImproveConfig, log):
        self.cfg, self.log = cfg, log
        self.engine, self.weights = None, None  # the engine and the resolved directory its weights came from
        self.sleep_level = 2 if cfg.device.startswith("cuda") else 1  # a GPU engine gives the trainer its memory
        self.timing: list[dict] = []

    def holding(self, model: str):
        """The engine, awake, with ``model``'s weights (a checkpoint directory)."""
        from unicorn.engine.llm_engine import Engine

        model = str(Path(model).resolve())
        start = time.perf_counter()
        if self.engine is None:
            cfg = self.cfg
            self.engine = Engine(model, device=cfg.device, dtype=cfg.dtype, num_kv_blocks=cfg.num_kv_blocks)
            action = "start"
        elif self.engine.sleep_level == 2:
            self.engine.wake_up(weights=model)
            action = "wake_up+load"
        else:
            action = "wake_up" if self.engine.sleep_level else None
            if self.engine.sleep_level:
                self.engine.wake_up()
            if model != self.weights:
                self.engine.update_weights(model)
                action = f"{action}+update_weights" if action else "update_weights"
        self.weights = model
        if action:
            self._record(action, model, start)
        return self.engine

    def sleep(self) -> None:
        if self.engine is not None and not self.engine.sleep_level:
            start = time.perf_counter()
            self.engine.sleep(level=self.sleep_level)
            self._record(f"sleep(level={self.sleep_level})", self.weights, start)

    def close(self) -> None:
        if self.engine is not None:
            self.engine.close()
            self.engine = None

    def _record(self, action: str, model: str, start: float) -> None:
        seconds = time.perf_counter() - start
        self.timing.append({"action": action, "model": model, "s": round(seconds, 3)})
        self.log(f"improve: engine {action} ({Path(model).name}) in {seconds:.2f}s")


class Improver:
    def __init__(self, cfg: ImproveConfig, out: str, log=print, progress: bool = True, stop_after: str | None = None,
                 keep_engine: bool = True):
        from unicorn.selfplay.recipe import load_recipe
        from unicorn.selfplay.workers import env_world

        self.cfg, self.out, self.log, self.progress, self.stop_after = cfg, Path(out), log, progress, stop_after
        self.recipe = load_recipe(cfg.recipe, cfg.recipe_settings)
        self.evaluator = load_evaluator(cfg.evaluator, cfg.eval_options) if cfg.evaluator else None
        self.identity = _identity(cfg, self.recipe, self.evaluator)
        self.fresh_reason = None if keep_engine else "keep_engine=False"
        if keep_engine and env_world()[1] > 1:
            self.fresh_reason = f"{env_world()[1]} processes under torchrun (one engine each)"
        self.kept = None if self.fresh_reason else KeptEngine(cfg, log)
        self.fresh_s: list[dict] = []  # the stages that ran on an engine of their own: (stage, seconds)

    # ---- stages -------------------------------------------------------------------------------------------------
    def _stage(self, rnd: Round, stage: str, run) -> dict:
        if rnd.done(stage):
            return rnd.stages[stage]
        self.log(f"improve: round {rnd.index}: {stage}")
        # as a re-run will read it back (key order included), so both give the same reports
        summary = json.loads(json.dumps(run(), sort_keys=True))
        rnd.finish(stage, summary)
        if self.stop_after == f"{rnd.index}:{stage}":
            raise StopImprove(f"stopped after round {rnd.index} {stage}")
        return summary

    def _selfplay(self, rnd: Round, model: str) -> dict:
        from unicorn.selfplay.driver import SelfPlayConfig
        from unicorn.selfplay.run import selfplay

        cfg = self.cfg
        if self.kept is None:
            self.log(f"improve: round {rnd.index}: self-play on a fresh engine ({self.fresh_reason})")
        engine = self.kept.holding(model) if self.kept else None
        summary = selfplay(model, cfg.recipe, SelfPlayConfig(cfg.num_prompts, seed=cfg.round_seed(rnd.index),
                                                             epoch_size=cfg.epoch_size),
                           str(rnd.path("judge", "selfplay")), device=cfg.device, dtype=cfg.dtype,
                           num_kv_blocks=cfg.num_kv_blocks, progress=self.progress, log=self.log,
                           settings=cfg.recipe_settings, engine=engine)
        keys = ("num_slots", "num_prompts", "num_kept", "acceptance_rate", "score_histogram", "parse_failures",
                "cpr_counts", "per_category")
        return {k: summary[k] for k in keys}

    def _cpr(self, rnd: Round, arm: str) -> dict:
        from unicorn.selfplay.run import rebuild_cpr

        dest = rnd.path(arm, "cpr")
        shutil.rmtree(dest, ignore_errors=True)  # an unfinished build: rebuilt from the self-play run, identically
        summary = rebuild_cpr(str(rnd.path("judge", "selfplay")), str(dest), log=self.log,
                              selection="judge" if arm == "judge" else "random")
        if not sum(summary["cpr_counts"].values()):
            raise RunDirError(f"round {rnd.index}: the CPR data set is empty (no prompt's best score reached the "
                              f"recipe's keep_min_best; {summary['parse_failures']} of {summary['num_rollouts']} judge "
                              f"replies had no score); nothing to train on")
        return {"cpr_counts": summary["cpr_counts"], "selection": "judge" if arm == "judge" else "random"}

    def _train_config(self, rnd: Round, arm: str, model: str):
        from unicorn.training.checkpoint import latest_checkpoint
        from unicorn.training.config import OptimConfig, TrainConfig

        t, cfg = self.cfg.train, self.cfg
        out = rnd.path(arm, "train")
        optim = OptimConfig(lr=t.lr, warmup=t.warmup, weight_decay=t.weight_decay, betas=tuple(t.betas), clip=t.clip)
        return TrainConfig(
            model=model, data=str(rnd.path(arm, "cpr")), out=str(out), steps=t.steps, micro_batch=t.micro_batch,
            grad_accum=t.grad_accum, seq_len=t.seq_len, seed=cfg.round_seed(rnd.index), optim=optim,
            kind_weights={**{k: 1.0 for k in KINDS}, **t.kind_weights},
            cond_dropout=t.cond_dropout, ema_decay=t.ema, export_ema=t.ema is not None,
            resume=latest_checkpoint(str(out / "checkpoints")) is not None,
            device="cuda" if cfg.device.startswith("cuda") else "cpu", log_every=max(1, t.steps // 10))

    def _train_and_export(self, rnd: Round, arm: str, model: str) -> None:
        """The train stage, then the export stage; a re-run resumes the trainer from its checkpoints (the final one
        when training had finished), so the export is that of the uninterrupted run."""
        from unicorn.training.trainer import Trainer

        prefix = ARMS[arm]
        if rnd.done(prefix + "train") and rnd.done(prefix + "export"):
            return
        if self.kept:
            self.kept.sleep()  # the trainer gets the engine's memory
        trainer = Trainer(self._train_config(rnd, arm, model), log=self.log)
        try:
            def train() -> dict:
                summary = trainer.train()  # final_loss_per_kind (Janus) or final_loss_per_term (BAGEL)
                return {"steps": summary["steps"], **{k: v for k, v in summary.items() if k.startswith("final_loss")}}

            self._stage(rnd, prefix + "train", train)

            def export() -> dict:
                dest = rnd.path(arm, "model")
                shutil.rmtree(dest, ignore_errors=True)
                trainer.export(str(dest), ema=self.cfg.train.ema is not None)
                return {"model": str(dest), "weights": "ema" if self.cfg.train.ema is not None else "raw",
                        "model_digest": model_digest(str(dest))}

            self._stage(rnd, prefix + "export", export)
        finally:
            del trainer
            gc.collect()

    def _evaluate(self, rnd: Round, arm: str, model: str) -> dict | None:
        if self.evaluator is None:
            return None
        prefix = ARMS[arm]
        dest = rnd.path(arm, "eval")

        def run() -> dict:
            shutil.rmtree(dest, ignore_errors=True)
            dest.mkdir(parents=True)
            result = None
            if self.kept and hasattr(self.evaluator, "evaluate_on"):
                result = self.evaluator.evaluate_on(self.kept.holding(model), model, dest, self.log)
                reason = "it declined the kept engine"
            else:
                reason = self.fresh_reason or "it has no evaluate_on"
            if result is None:  # the evaluator opens its own engine; the kept one sleeps meanwhile
                self.log(f"improve: round {rnd.index}: evaluator {self.evaluator.name!r} on a fresh engine ({reason})")
                if self.kept:
                    self.kept.sleep()
                start = time.perf_counter()
                result = self.evaluator.evaluate(model, dest, self.log)
                self.fresh_s.append({"stage": f"{rnd.index}:{prefix}eval", "s": round(time.perf_counter() - start, 3)})
            result = check_result(self.evaluator.name, result)
            atomic_write_json(dest / "eval.json", result)
            return {"metrics": result["metrics"]}

        self._stage(rnd, prefix + "eval", run)
        return json.loads((dest / "eval.json").read_text())

    # ---- the loop -----------------------------------------------------------------------------------------------
    def run(self, rounds: int) -> dict:
        try:
            return self._run(rounds)
        finally:
            if self.kept:
                self.kept.close()

    def _write_timing(self, rnd: Round) -> None:
        """Which engine each stage of this session ran on, and the seconds its starts and weight loads took (not part
        of the results: a resumed or fresh-engine run writes other figures)."""
        kept = self.kept.timing if self.kept else []
        atomic_write_json(rnd.dir / "timing.json", {"engine": "kept" if self.kept else "fresh",
                                                    "fresh_reason": self.fresh_reason, "kept_engine": kept,
                                                    "fresh_engine_stages": self.fresh_s})
        if self.kept:
            self.kept.timing = []
        self.fresh_s = []

    def _run(self, rounds: int) -> dict:
        from unicorn.selfplay import improve_report as report

        if rounds < 1:
            raise ValueError(f"--rounds must be >= 1, got {rounds}")
        resuming = open_out(self.out, self.identity)
        self.log(f"improve: {'resuming' if resuming else 'starting'} {self.out} ({rounds} rounds)")
        base_round = Round(self.out, 0)
        base = self._evaluate(base_round, "judge", self.cfg.model)
        reports, previous, model = [], base, self.cfg.model
        for index in range(1, rounds + 1):
            rnd = Round(self.out, index)
            rnd.dir.mkdir(parents=True, exist_ok=True)
            atomic_write_json(rnd.dir / "input.json", {"model": str(Path(model).resolve())})
            try:
                selfplay_summary = self._stage(rnd, "selfplay", lambda: self._selfplay(rnd, model))
            except SelfPlayError:  # the settings were refused before anything was drawn
                if not resuming:
                    remove_unstarted(self.out)
                raise
            arms = ["judge", "control"] if self.cfg.control else ["judge"]
            results = {}
            for arm in arms:
                cpr = self._stage(rnd, ARMS[arm] + "cpr", lambda: self._cpr(rnd, arm))
                self._train_and_export(rnd, arm, model)
                evaluation = self._evaluate(rnd, arm, str(rnd.path(arm, "model")))
                results[arm] = {"cpr": cpr, "train": rnd.stages[ARMS[arm] + "train"],
                                "export": rnd.stages[ARMS[arm] + "export"], "eval": evaluation}
            self._write_timing(rnd)
            round_report = report.round_report(index, model, selfplay_summary, results, base, previous)
            report.write_round(rnd.dir, round_report)
            reports.append(round_report)
            previous = results["judge"]["eval"]
            model = str(rnd.path("judge", "model"))
        overall = report.overall_report(self.identity, base, reports)
        report.write_overall(self.out, overall, log=self.log)
        return overall


def improve(cfg: ImproveConfig, rounds: int, out: str, log=print, progress: bool = True,
            stop_after: str | None = None, keep_engine: bool = True) -> dict | None:
    """Runs (or resumes) ``rounds`` rounds into ``out``; returns the overall report (None when stopped early).
    ``keep_engine=False``: a fresh engine for every stage (the same results; for comparison)."""
    try:
        return Improver(cfg, out, log=log, progress=progress, stop_after=stop_after,
                        keep_engine=keep_engine).run(rounds)
    except StopImprove as stop:
        log(f"improve: {stop}")
        return None
