"""Applies training-time transformations to a TrainingModel, in torchtitan's order:
freeze -> activation checkpointing (per decoder layer) -> torch.compile (per decoder layer) -> FSDP2
(``fully_shard`` each LM decoder layer and each vision layer, then the root).

The model files stay free of all of this. Decoder layers run through ``forward_dense`` in training, so checkpointing
and compile wrap that method, and FSDP2 is told it is a forward method (``register_fsdp_forward_method``).
"""
from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import nn
from torch.utils.checkpoint import checkpoint

from unicorn.training.model import TrainingModel


@dataclass(frozen=True)
class ParallelConfig:
    activation_checkpointing: bool = False
    compile: bool = False
    freeze_vision: bool = False  # the SigLIP tower (its aligner stays trainable)
    param_dtype: str = "fp32"  # FSDP2 MixedPrecisionPolicy param dtype: "bf16" (GPU) or "fp32"

    def __post_init__(self):
        if self.param_dtype not in ("bf16", "fp32"):
            raise ValueError(f"param_dtype must be 'bf16' or 'fp32', got {self.param_dtype!r}")


def freeze(model: TrainingModel, cfg: ParallelConfig) -> None:
    if cfg.freeze_vision:
        model.janus.vision_model.requires_grad_(False)


def _checkpointed(method):
    def run(*args, **kwargs):
        return checkpoint(method, *args, use_reentrant=False, **kwargs)

    return run


def apply_activation_checkpointing(model: TrainingModel) -> None:
    for layer in model.janus.language_model.layers:
        layer.forward_dense = _checkpointed(layer.forward_dense)


def apply_compile(model: TrainingModel) -> None:
    for layer in model.janus.language_model.layers:
        layer.forward_dense = torch.compile(layer.forward_dense)


def apply_fsdp(model: TrainingModel, mesh, param_dtype: torch.dtype, reduce_dtype: torch.dtype = torch.float32) -> None:
    from torch.distributed.fsdp import MixedPrecisionPolicy, fully_shard, register_fsdp_forward_method

    policy = MixedPrecisionPolicy(param_dtype=param_dtype, reduce_dtype=reduce_dtype)
    for layer in model.janus.vision_model.encoder.layers:
        fully_shard(layer, mesh=mesh, mp_policy=policy)
    for layer in model.janus.language_model.layers:
        fully_shard(layer, mesh=mesh, mp_policy=policy)
        register_fsdp_forward_method(layer, "forward_dense")
    fully_shard(model, mesh=mesh, mp_policy=policy)


def parallelize(model: TrainingModel, cfg: ParallelConfig, mesh=None) -> nn.Module:
    """``mesh`` (a 1-D DeviceMesh) turns on FSDP2; without it only freezing, checkpointing and compile apply."""
    freeze(model, cfg)
    if cfg.activation_checkpointing:
        apply_activation_checkpointing(model)
    if cfg.compile:
        apply_compile(model)
    if mesh is not None:
        apply_fsdp(model, mesh, torch.bfloat16 if cfg.param_dtype == "bf16" else torch.float32)
    return model
