"""Shared fixtures for training tests: a tiny Janus, a synthetic CPR set, and 2-process runs via mp.spawn."""
from __future__ import annotations

import json
import os
import tempfile
import traceback

import torch.distributed as dist
import torch.multiprocessing as mp

from unicorn.training.config import OptimConfig, TrainConfig


def make_config(model, data, out, **overrides) -> TrainConfig:
    optim = OptimConfig(**overrides.pop("optim", {"lr": 1e-3, "warmup": 2}))
    base = dict(model=model, data=data, out=out, steps=4, micro_batch=2, seq_len=512, seed=0, optim=optim)
    return TrainConfig(**{**base, **overrides})


def _worker(rank: int, world: int, init_file: str, cfg_kwargs: dict, result_file: str, export: bool):
    os.environ["DS_ACCELERATOR"] = "cpu"
    try:
        dist.init_process_group("gloo", init_method=f"file://{init_file}", rank=rank, world_size=world)
        from unicorn.training.trainer import Trainer

        trainer = Trainer(make_config(**cfg_kwargs), log=lambda *a: None)
        trainer.train()
        if rank == 0:
            with open(result_file, "w") as f:
                json.dump(losses(trainer.history), f)
        dist.barrier()
        dist.destroy_process_group()
    except BaseException:
        with open(result_file + f".err{rank}", "w") as f:
            f.write(traceback.format_exc())
        raise


def run_two_procs(**cfg_kwargs) -> list[dict]:
    """Runs the trainer in 2 gloo processes; returns rank 0's per-step losses."""
    tmp = tempfile.mkdtemp(prefix="unicorn-dist-")
    result = os.path.join(tmp, "result.json")
    try:
        mp.spawn(_worker, args=(2, os.path.join(tmp, "pg"), cfg_kwargs, result, False), nprocs=2, join=True)
    except Exception as e:
        errs = [open(os.path.join(tmp, f)).read() for f in sorted(os.listdir(tmp)) if ".err" in f]
        raise RuntimeError("worker failed:\n" + "\n".join(errs)) from e
    with open(result) as f:
        return json.load(f)


def losses(history) -> list[dict]:
    """Per step: the loss of each term (Janus: per CPR kind; BAGEL: ce, mse) and the weighted total."""
    return [r.get("loss_per_kind", r.get("loss_per_term")) | {"loss": r["loss"]} for r in history]


def assert_histories_close(a: list[dict], b: list[dict], rtol: float) -> None:
    """Two runs' per-step metrics agree key by key within ``rtol`` (relative to the first run's value)."""
    assert len(a) == len(b)
    for step_a, step_b in zip(a, b):
        assert step_a.keys() == step_b.keys()
        for k in step_a:
            assert abs(step_a[k] - step_b[k]) <= rtol * abs(step_a[k]), (k, step_a[k], step_b[k])
