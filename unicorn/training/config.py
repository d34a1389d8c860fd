"""The run's configuration: one validated dataclass per concern, all filled from ``unicorn train`` flags."""
from __future__ import annotations

import json
import math
import os
from dataclasses import dataclass, field

from unicorn.cpr.schema import KINDS

BACKENDS = ("single", "fsdp2", "deepspeed")
SCHEDULES = ("constant", "cosine")


class ConfigError(ValueError):
    """A bad flag or a DeepSpeed config that contradicts the flags; the message names the key."""


@dataclass(frozen=True)
class OptimConfig:
    lr: float = 2e-5
    weight_decay: float = 0.0
    betas: tuple[float, float] = (0.9, 0.95)
    eps: float = 1e-8
    warmup: int = 0
    schedule: str = "constant"
    min_lr_ratio: float = 0.1  # cosine floor, as a fraction of lr
    clip: float = 1.0  # <= 0: no clipping

    def __post_init__(self):
        if self.schedule not in SCHEDULES:
            raise ConfigError(f"--schedule must be one of {', '.join(SCHEDULES)}, got {self.schedule!r}")
        if not self.lr > 0 or self.warmup < 0:
            raise ConfigError(f"--lr must be > 0 and --warmup >= 0 (got {self.lr}, {self.warmup})")

    def lr_at(self, step: int, total_steps: int) -> float:
        """Learning rate of optimizer step ``step`` (0-based): linear warm-up, then constant or cosine."""
        if step < self.warmup:
            return self.lr * (step + 1) / self.warmup
        if self.schedule == "constant":
            return self.lr
        progress = min(1.0, (step - self.warmup) / max(1, total_steps - self.warmup))
        return self.lr * (self.min_lr_ratio + (1 - self.min_lr_ratio) * 0.5 * (1 + math.cos(math.pi * progress)))

    def build(self, params):
        import torch

        return torch.optim.AdamW(params, lr=self.lr, betas=self.betas, eps=self.eps, weight_decay=self.weight_decay)


@dataclass(frozen=True)
class TrainConfig:
    model: str
    data: str
    out: str
    backend: str = "single"
    deepspeed_config: str | None = None
    steps: int = 100
    micro_batch: int = 1
    grad_accum: int = 1
    seq_len: int = 2048
    seed: int = 0
    optim: OptimConfig = field(default_factory=OptimConfig)
    kind_weights: dict = field(default_factory=lambda: {k: 1.0 for k in KINDS})
    cond_dropout: float = 0.0  # t2i samples trained on the content-free prompt, for classifier-free guidance
    # BAGEL (official UniCorn fine-tuning: ce 0.1, mse 1.0, shift 1.0; official dropouts text 0.1, vit 0.3, vae 0.3)
    ce_weight: float = 0.1
    mse_weight: float = 1.0
    timestep_shift: float = 1.0
    vit_cond_dropout: float = 0.0
    vae_cond_dropout: float = 0.0
    loss_normalization: str = "step"  # each term over its tokens in the step, or per micro-step (official BAGEL)
    save_every: int = 0  # 0: only at the end
    keep: int = 2
    resume: bool = False
    resume_from: str | None = None
    export: str | None = None
    on_bad_record: str = "stop"
    device: str = "auto"  # auto | cpu | cuda
    precision: str = "auto"  # auto (bf16 on GPU, fp32 on CPU) | bf16 | fp32
    activation_checkpointing: bool = False
    compile: bool = False
    freeze_vision: bool = False
    log_every: int = 1
    stop_after: int | None = None  # stop (as if killed) after this step: for tests and time-boxed jobs
    ema_decay: float | None = None  # an fp32 moving average of the weights (ema.py); None: none kept
    export_ema: bool = False  # --export writes the average instead of the raw weights

    def __post_init__(self):
        if self.backend not in BACKENDS:
            raise ConfigError(f"--backend must be one of {', '.join(BACKENDS)}, got {self.backend!r}")
        if self.backend == "deepspeed" and not self.deepspeed_config:
            raise ConfigError("--backend deepspeed needs --deepspeed-config FILE")
        if self.deepspeed_config and not os.path.exists(self.deepspeed_config):
            raise ConfigError(f"--deepspeed-config {self.deepspeed_config!r} does not exist")
        for name in ("steps", "micro_batch", "grad_accum"):
            if getattr(self, name) < 1:
                raise ConfigError(f"--{name.replace('_', '-')} must be >= 1, got {getattr(self, name)}")
        if self.precision not in ("auto", "bf16", "fp32"):
            raise ConfigError(f"--precision must be auto, bf16 or fp32, got {self.precision!r}")
        if self.device not in ("auto", "cpu", "cuda"):
            raise ConfigError(f"--device must be auto, cpu or cuda, got {self.device!r}")
        for name in ("cond_dropout", "vit_cond_dropout", "vae_cond_dropout"):
            if not 0.0 <= getattr(self, name) < 1.0:
                raise ConfigError(f"--{name.replace('_', '-')} must be in [0, 1), got {getattr(self, name)}")
        if self.loss_normalization not in ("step", "micro"):
            raise ConfigError(f"--loss-normalization must be step or micro, got {self.loss_normalization!r}")
        if self.ema_decay is not None and not 0.0 < self.ema_decay < 1.0:
            raise ConfigError(f"--ema must be in (0, 1), got {self.ema_decay}")
        if self.export_ema and self.ema_decay is None:
            raise ConfigError("--export-ema needs --ema DECAY (no moving average is kept without it)")
        if self.ce_weight < 0 or self.mse_weight < 0 or not self.timestep_shift > 0:
            raise ConfigError(f"--ce-weight and --mse-weight must be >= 0 and --timestep-shift > 0 (got "
                              f"{self.ce_weight}, {self.mse_weight}, {self.timestep_shift})")
        unknown = set(self.kind_weights) - set(KINDS)
        if unknown:
            raise ConfigError(f"--kind-weights: unknown kind(s) {sorted(unknown)}; kinds: {', '.join(KINDS)}")
        if not os.path.isdir(self.model):
            raise ConfigError(f"--model {self.model!r} is not a directory")
        if not os.path.isdir(self.data):
            raise ConfigError(f"--data {self.data!r} is not a directory")

    def weights(self) -> list[float]:
        return [float(self.kind_weights.get(k, 1.0)) for k in KINDS]


# Training settings of the official recipe (method.md §4, [code], BAGEL's script: lr 1e-5, warm-up 50, 600 steps,
# gradient accumulation 4, EMA 0.99, AdamW (0.9, 0.95), clip 1.0, checkpoints every 200 steps). Its loss weights
# (text CE 0.1 beside flow-matching MSE 1.0) are BAGEL's --ce-weight / --mse-weight defaults; Janus, whose every
# target is a CE token, has no counterpart.
PRESETS = {
    "unicorn-official": {"lr": 1e-5, "warmup": 50, "steps": 600, "grad_accum": 4, "ema": 0.99, "betas": (0.9, 0.95),
                         "clip": 1.0, "save_every": 200},
}


def load_deepspeed_config(cfg: TrainConfig, world_size: int, bf16: bool) -> dict:
    """Reads the JSON and checks it against the flags; fills the keys it leaves out. Raises ConfigError naming the key."""
    try:
        with open(cfg.deepspeed_config) as f:
            ds = json.load(f)
    except json.JSONDecodeError as e:
        raise ConfigError(f"{cfg.deepspeed_config}: not valid JSON ({e})") from None
    where = cfg.deepspeed_config
    expected = {
        "train_micro_batch_size_per_gpu": (cfg.micro_batch, "--micro-batch"),
        "gradient_accumulation_steps": (cfg.grad_accum, "--grad-accum"),
        "gradient_clipping": (max(cfg.optim.clip, 0.0), "--clip"),
        "train_batch_size": (cfg.micro_batch * cfg.grad_accum * world_size, "--micro-batch x --grad-accum x world size"),
    }
    for key, (value, flag) in expected.items():
        if key in ds and ds[key] != "auto" and float(ds[key]) != float(value):
            raise ConfigError(f"{where}: {key} is {ds[key]} but {flag} gives {value}; make them agree (or drop the key)")
        ds[key] = value
    bf16_cfg = ds.get("bf16") or {}
    if "enabled" in bf16_cfg and bf16_cfg["enabled"] != "auto" and bool(bf16_cfg["enabled"]) != bf16:
        raise ConfigError(f"{where}: bf16.enabled is {bf16_cfg['enabled']} but --precision gives "
                          f"{'bf16' if bf16 else 'fp32'}; make them agree")
    ds["bf16"] = {**bf16_cfg, "enabled": bf16}
    if (ds.get("fp16") or {}).get("enabled"):
        raise ConfigError(f"{where}: fp16.enabled is not supported (use bf16 or fp32)")
    for key in ("optimizer", "scheduler"):
        if key in ds:
            raise ConfigError(f"{where}: remove the {key!r} section: unicorn passes its own AdamW and learning-rate "
                              "schedule (--lr, --warmup, --schedule, --weight-decay)")
    stage = (ds.get("zero_optimization") or {}).get("stage", 0)
    if stage not in (0, 1, 2, 3):
        raise ConfigError(f"{where}: zero_optimization.stage must be 0..3, got {stage!r}")
    ds.setdefault("steps_per_print", 10**9)
    ds.setdefault("wall_clock_breakdown", False)
    return ds
