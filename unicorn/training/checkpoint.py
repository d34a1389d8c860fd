"""Training checkpoints: ``<out>/checkpoints/step_00000100/`` holding

    meta.json           backend, world size, model config hash, batch shape (checked on resume)
    trainer_state.json  step, data position, config (rank 0)
    rng/rank_<r>.pt     torch / python RNG states per rank
    dcp/                torch.distributed.checkpoint shards: model + optimizer (single, fsdp2)
    ds/                 DeepSpeed's save_checkpoint (deepspeed)

A checkpoint is written into ``.tmp-step_...`` and renamed when complete, so a killed run never leaves a partial
``step_*``; the newest ``keep`` complete checkpoints are kept.
"""
from __future__ import annotations

import hashlib
import json
import os
import random
import re
import shutil
import warnings

import torch

CHECKPOINT_FORMAT = 1
_STEP_DIR = re.compile(r"^step_(\d{8})$")


class ResumeError(RuntimeError):
    """A checkpoint that cannot continue this run; the message says what differs."""


def model_config_hash(model_path: str) -> str:
    with open(os.path.join(model_path, "config.json")) as f:
        config = json.load(f)
    return hashlib.sha256(json.dumps(config, sort_keys=True).encode()).hexdigest()[:16]


def step_dir(root: str, step: int) -> str:
    return os.path.join(root, f"step_{step:08d}")


def tmp_dir(root: str, step: int) -> str:
    return os.path.join(root, f".tmp-step_{step:08d}")


def list_checkpoints(root: str) -> list[tuple[int, str]]:
    if not os.path.isdir(root):
        return []
    found = [(int(m.group(1)), os.path.join(root, name)) for name in os.listdir(root) if (m := _STEP_DIR.match(name))]
    return sorted(found)


def latest_checkpoint(root: str) -> str | None:
    found = list_checkpoints(root)
    return found[-1][1] if found else None


def prepare_tmp(root: str, step: int) -> str:
    """Rank 0: an empty temp directory for this step."""
    path = tmp_dir(root, step)
    if os.path.exists(path):
        shutil.rmtree(path)
    os.makedirs(os.path.join(path, "rng"))
    return path


def write_json_atomic(path: str, data: dict) -> None:
    tmp = path + ".tmp"
    with open(tmp, "w") as f:
        json.dump(data, f, indent=2)
        f.flush()
        os.fsync(f.fileno())
    os.replace(tmp, path)


def finalize(root: str, step: int, meta: dict, trainer_state: dict, keep: int) -> str:
    """Rank 0, after every rank wrote its part: meta + state, rename into place, prune old checkpoints."""
    path = tmp_dir(root, step)
    write_json_atomic(os.path.join(path, "trainer_state.json"), trainer_state)
    write_json_atomic(os.path.join(path, "meta.json"), {"format": CHECKPOINT_FORMAT, **meta})
    final = step_dir(root, step)
    if os.path.exists(final):
        shutil.rmtree(final)
    os.replace(path, final)
    for _, old in list_checkpoints(root)[:-keep] if keep > 0 else []:
        shutil.rmtree(old, ignore_errors=True)
    return final


def save_rng(path: str, rank: int) -> None:
    torch.save({"torch": torch.get_rng_state(), "python": random.getstate(),
                "cuda": torch.cuda.get_rng_state_all() if torch.cuda.is_available() else None},
               os.path.join(path, "rng", f"rank_{rank}.pt"))


def load_rng(path: str, rank: int) -> None:
    state = torch.load(os.path.join(path, "rng", f"rank_{rank}.pt"), weights_only=False)
    torch.set_rng_state(state["torch"])
    random.setstate(state["python"])
    if state["cuda"] is not None and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state["cuda"])


def read_meta(path: str) -> dict:
    file = os.path.join(path, "meta.json")
    if not os.path.exists(file):
        raise ResumeError(f"{path} is not a unicorn training checkpoint (no meta.json)")
    with open(file) as f:
        return json.load(f)


def check_compatible(path: str, expected: dict) -> dict:
    """Raises ResumeError listing every field of meta.json that differs from this run."""
    meta = read_meta(path)
    if meta.get("format") != CHECKPOINT_FORMAT:
        raise ResumeError(f"{path}: checkpoint format {meta.get('format')!r}, this unicorn reads {CHECKPOINT_FORMAT}")
    diffs = [f"{key}: checkpoint {meta.get(key)!r}, this run {value!r}" for key, value in expected.items()
             if meta.get(key) != value]
    if diffs:
        hints = []
        if any(d.startswith("model_hash") for d in diffs):
            hints.append("it was trained from a different model (config.json differs)")
        if any(d.startswith(("world_size", "backend")) for d in diffs):
            hints.append("its model/optimizer shards and data split belong to another world size or backend")
        raise ResumeError(
            f"cannot resume from {path}: " + "; ".join(diffs) + ". " + (" and ".join(hints) + ". " if hints else "")
            + "Resume with the original settings, or start a new run (--out elsewhere, or export and train from the "
            "export with --model)."
        )
    return meta


def read_trainer_state(path: str) -> dict:
    with open(os.path.join(path, "trainer_state.json")) as f:
        return json.load(f)


# ---- torch.distributed.checkpoint (single and fsdp2) -------------------------------------------------------------


def dcp_save(path: str, model, optimizer, ema: dict | None = None) -> None:
    """``ema``: the EMA's shadow tensors (saved beside the model, in their own sharded layout)."""
    import torch.distributed.checkpoint as dcp
    from torch.distributed.checkpoint.state_dict import get_state_dict

    model_sd, optim_sd = get_state_dict(model, optimizer)
    state = {"model": model_sd, "optim": optim_sd, **({"ema": ema} if ema is not None else {})}
    with warnings.catch_warnings():  # one process without a process group is the intended single-backend case
        warnings.filterwarnings("ignore", message=".*torch.distributed is disabled.*")
        dcp.save(state, checkpoint_id=os.path.join(path, "dcp"))


def dcp_load(path: str, model, optimizer, ema: dict | None = None) -> None:
    """Loads model and optimizer state, and the EMA's shadow tensors in place when ``ema`` is given."""
    import torch.distributed.checkpoint as dcp
    from torch.distributed.checkpoint.state_dict import get_state_dict, set_state_dict

    model_sd, optim_sd = get_state_dict(model, optimizer)
    state = {"model": model_sd, "optim": optim_sd, **({"ema": ema} if ema is not None else {})}
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message=".*torch.distributed is disabled.*")
        dcp.load(state, checkpoint_id=os.path.join(path, "dcp"))
    set_state_dict(model, optimizer, model_state_dict=state["model"], optim_state_dict=state["optim"])
