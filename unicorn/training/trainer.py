"""The training loop: data -> backend forward/backward/step -> metrics -> checkpoints -> export.

One optimizer step takes ``grad_accum`` micro-batches of ``micro_batch`` packed rows per rank. The model family
(family.py: Janus, BAGEL) names the loss terms; each term's loss is its mean over its target tokens in the whole
global step (Janus: CE per CPR kind; BAGEL: text CE and flow-matching MSE), and the step loss is their weighted sum
(loss.py), so single, fsdp2 and deepspeed runs with the same global batch compute the same numbers. With
``--loss-normalization micro`` (the official BAGEL trainer's) each micro-step's terms are normalized by that
micro-step's global counts and the micro-steps weigh equally (the same at --grad-accum 1).
"""
from __future__ import annotations

import json
import os
import random
import time

import torch

from unicorn.cpr.schema import KINDS
from unicorn.training import checkpoint as ckpt
from unicorn.training.backends import Backend, build_backend
from unicorn.training.config import TrainConfig
from unicorn.training.ema import EMA
from unicorn.training.family import family_class
from unicorn.training.loss import weighted_step_loss

PEAK_BF16_FLOPS = 989e12  # H100 SXM dense bf16, for MFU
SHORT = {"t2i": "t2i", "caption": "cap", "judgement": "jud", "reflection": "ref", "text": "txt"}
assert set(SHORT) == set(KINDS)


def _pick_device(cfg: TrainConfig) -> torch.device:
    if cfg.device == "cuda" or (cfg.device == "auto" and torch.cuda.is_available()):
        if not torch.cuda.is_available():
            raise RuntimeError("--device cuda but no CUDA device is available")
        local_rank = int(os.environ.get("LOCAL_RANK", "0"))
        torch.cuda.set_device(local_rank)
        return torch.device("cuda", local_rank)
    return torch.device("cpu")


class MetricsLog:
    """Appends one JSON line per step (a single write per line; rank 0 only)."""

    def __init__(self, path: str | None):
        self.path = path
        if path:
            os.makedirs(os.path.dirname(path), exist_ok=True)

    def write(self, row: dict) -> None:
        if not self.path:
            return
        with open(self.path, "a") as f:
            f.write(json.dumps(row) + "\n")
            f.flush()


class Trainer:
    def __init__(self, cfg: TrainConfig, log=print):
        self.cfg = cfg
        self.device = _pick_device(cfg)
        self.bf16 = cfg.precision == "bf16" or (cfg.precision == "auto" and self.device.type == "cuda")
        if self.bf16 and self.device.type != "cuda":
            raise RuntimeError("--precision bf16 needs a GPU; on CPU training runs in fp32")
        torch.manual_seed(cfg.seed)
        random.seed(cfg.seed)
        if self.device.type == "cpu":
            torch.use_deterministic_algorithms(True, warn_only=True)

        load_device = self.device if cfg.backend == "single" else torch.device("cpu")
        self.family = family_class(cfg.model)(cfg, self.device, load_device)
        self.terms = tuple(self.family.terms)
        self.backend: Backend = build_backend(cfg, self.device, self.bf16)
        self.backend.setup(self.family.module)
        self.rank, self.world_size = self.backend.rank, self.backend.world_size
        self.ema = EMA(self.backend, cfg.ema_decay) if cfg.ema_decay is not None else None
        self.log = log if self.rank == 0 else (lambda *a, **k: None)
        self.data = self.family.build_data(self.rank, self.world_size, self.log)
        self.weights = self.family.weights()
        self.num_params = self.family.num_params
        self.active_params = self.family.active_params  # per token, for MFU
        self.noun = self.family.metrics_noun  # metrics keys: loss_per_kind (Janus) or loss_per_term (BAGEL)
        self.step = 0
        self.ckpt_root = os.path.join(cfg.out, "checkpoints")
        self.metrics = MetricsLog(os.path.join(cfg.out, "metrics.jsonl") if self.rank == 0 else None)
        self.history: list[dict] = []
        if cfg.resume or cfg.resume_from:
            self._resume()

    # ---- checkpoints --------------------------------------------------------------------------------------------
    def _meta(self) -> dict:
        return {
            "backend": self.cfg.backend, "world_size": self.world_size,
            "model_hash": self.family.model_hash(), "freeze_vision": self.cfg.freeze_vision,
            "micro_batch": self.cfg.micro_batch, "grad_accum": self.cfg.grad_accum, "seq_len": self.cfg.seq_len,
            "ema_decay": self.cfg.ema_decay,
            **({"loss_normalization": "micro"} if self.cfg.loss_normalization == "micro" else {}),
            **self.family.meta(),
        }

    def save(self) -> str:
        root = self.ckpt_root
        if self.rank == 0:
            os.makedirs(root, exist_ok=True)
            ckpt.prepare_tmp(root, self.step)
        self.backend.barrier()
        path = ckpt.tmp_dir(root, self.step)
        self.backend.save(path)
        ckpt.save_rng(path, self.rank)
        if self.ema is not None:
            self.ema.save(path, self.rank)
        self.backend.barrier()
        final = ckpt.step_dir(root, self.step)
        if self.rank == 0:
            state = {"step": self.step, "data": self.data.state_dict(), "model": self.cfg.model}
            meta = {**self._meta(), "step": self.step, "model_path": self.cfg.model}
            ckpt.finalize(root, self.step, meta, state, self.cfg.keep)
        self.backend.barrier()
        return final

    def _resume(self) -> None:
        path = self.cfg.resume_from or ckpt.latest_checkpoint(self.ckpt_root)
        if path is None:
            self.log(f"no checkpoint under {self.ckpt_root}; starting from step 0")
            return
        ckpt.check_compatible(path, self._meta())
        self.backend.load(path)
        ckpt.load_rng(path, self.rank)
        if self.ema is not None:
            self.ema.load(path, self.rank)
        state = ckpt.read_trainer_state(path)
        self.data.load_state_dict(state["data"])
        self.step = state["step"]
        self.log(f"resumed from {path} at step {self.step}")

    # ---- training -----------------------------------------------------------------------------------------------
    def _to_device(self, batch: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
        return {k: v.to(self.device, non_blocking=True) for k, v in batch.items()}

    def train_step(self) -> dict:
        cfg, backend = self.cfg, self.backend
        start = time.perf_counter()
        micro = [self.data.next_batch() for _ in range(cfg.grad_accum)]
        per_micro = backend.all_reduce_sum(torch.stack([self.family.counts(b) for b in micro]))  # [G, M], global
        counts = per_micro.sum(0)
        tokens = backend.all_reduce_sum(torch.tensor([sum(self.family.num_tokens(b) for b in micro)]))
        lr = cfg.optim.lr_at(self.step, cfg.steps)
        backend.set_lr(lr)
        sums = torch.zeros(len(self.terms), dtype=torch.float64)
        for i, batch in enumerate(micro):
            batch = self._to_device(batch)
            with backend.autocast():
                ce_sums = backend.forward(batch)
            if cfg.loss_normalization == "micro":  # the official BAGEL trainer: per micro-step, then / grad_accum
                loss = weighted_step_loss(ce_sums, per_micro[i].to(ce_sums.device), self.weights,
                                          self.world_size) / cfg.grad_accum
            else:
                loss = weighted_step_loss(ce_sums, counts.to(ce_sums.device), self.weights, self.world_size)
            backend.backward(loss, last_micro=i == cfg.grad_accum - 1)
            sums += ce_sums.detach().double().cpu()
        grad_norm = backend.step(cfg.optim.clip)
        if self.ema is not None:
            self.ema.update()
        sums = backend.all_reduce_sum(sums)
        if self.device.type == "cuda":
            torch.cuda.synchronize()
        elapsed = time.perf_counter() - start
        self.step += 1

        per_term = {k: float(sums[i] / counts[i]) for i, k in enumerate(self.terms) if counts[i] > 0}
        loss_value = sum(float(self.weights[self.terms.index(k)]) * v for k, v in per_term.items())
        row = {
            "step": self.step, "loss": loss_value, f"loss_per_{self.noun}": per_term,
            f"tokens_per_{self.noun}": {k: int(counts[i]) for i, k in enumerate(self.terms)},
            "lr": lr, "grad_norm": grad_norm, "tokens": int(tokens.item()), "step_time_s": elapsed,
            "tokens_per_s": float(tokens.item()) / elapsed,
            "padding": 1.0 - float(tokens.item()) / (cfg.seq_len * cfg.micro_batch * cfg.grad_accum * self.world_size),
        }
        if self.device.type == "cuda":
            row["mfu"] = 6 * self.active_params * row["tokens"] / elapsed / (PEAK_BF16_FLOPS * self.world_size)
        return row

    def _progress(self, row: dict) -> str:
        kinds = " ".join(f"{SHORT.get(k, k)} {v:.3f}" for k, v in row[f"loss_per_{self.noun}"].items()
                         if k in self.family.shown_terms)
        line = (f"step {row['step']}/{self.cfg.steps} | loss {row['loss']:.4f} ({kinds}) | lr {row['lr']:.2e} | "
                f"gnorm {row['grad_norm']:.3f} | {row['tokens_per_s']:.0f} tok/s")
        return line + (f" | mfu {100 * row['mfu']:.1f}%" if "mfu" in row else "")

    def train(self) -> dict:
        cfg = self.cfg
        started = time.perf_counter()
        first_step = self.step
        if self.step == 0 and self.rank == 0:
            self.log(f"training {cfg.backend} x{self.world_size} on {self.device}: {len(self.data.records)} records "
                     f"{self.data.counts}, {self.num_params / 1e6:.2f}M params, seq_len {cfg.seq_len}")
        while self.step < cfg.steps:
            row = self.train_step()
            self.history.append(row)
            self.metrics.write(row)
            if self.step % cfg.log_every == 0 or self.step == cfg.steps:
                self.log(self._progress(row))
            if (cfg.save_every and self.step % cfg.save_every == 0) or self.step == cfg.steps:
                self.save()
            if cfg.stop_after is not None and self.step >= cfg.stop_after:
                break
        elapsed = time.perf_counter() - started
        done = self.history[-(self.step - first_step):] if self.step > first_step else []
        summary = {
            "steps": self.step, "elapsed_s": elapsed,
            "final_loss": done[-1]["loss"] if done else None,
            f"final_loss_per_{self.noun}": done[-1][f"loss_per_{self.noun}"] if done else None,
            "tokens_per_s": sum(r["tokens"] for r in done) / max(elapsed, 1e-9),
            "checkpoint": ckpt.latest_checkpoint(self.ckpt_root),
        }
        if cfg.export:
            summary["export"] = self.export(cfg.export)
        return summary

    # ---- export -------------------------------------------------------------------------------------------------
    def full_model_state_dict(self, ema: bool = False) -> dict[str, torch.Tensor]:
        """The trained model's weights by its own names (rank 0; other ranks get {}); a collective. ``ema``: the
        moving average in place of every trainable weight (frozen ones and buffers as they are)."""
        if ema:
            if self.ema is None:
                raise RuntimeError("no EMA weights are kept in this run (train with --ema DECAY)")
            if getattr(self.backend, "stage", None) == 3:
                state = self.backend.full_state_dict()
                averaged = self.ema.gathered_zero3()
                state = {k: averaged[k].to(v.dtype) if k in averaged else v for k, v in state.items()}
            else:
                with self.ema.swapped_in():  # copied before the swap back (one process's state aliases its weights)
                    state = {k: v.clone() for k, v in self.backend.full_state_dict().items()}
        else:
            state = self.backend.full_state_dict()
        prefix = self.family.state_prefix
        return {k.removeprefix(prefix): v for k, v in state.items()}

    full_janus_state_dict = full_model_state_dict  # the name engine.update_weights' docs use

    def export(self, out_dir: str, ema: bool | None = None) -> str:
        """``ema`` (default --export-ema): the export serves the moving average; a family whose layout has a place
        for it beside the raw weights (BAGEL's ema.safetensors) gets both, otherwise it replaces them."""
        ema = self.cfg.export_ema if ema is None else ema
        average = self.full_model_state_dict(ema=True) if ema else None
        raw = self.full_model_state_dict() if average is None or self.family.ema_beside_raw else None
        if self.rank == 0:
            self.family.export(raw, out_dir, ema=average)
            self.log(f"exported {'the EMA weights' if ema else 'the weights'} to {out_dir}")
        self.backend.barrier()
        return out_dir
