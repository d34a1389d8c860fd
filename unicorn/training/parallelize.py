"""Applies training-time transformations to a training module, in torchtitan's order:
freeze -> activation checkpointing (per decoder layer) -> torch.compile (per decoder layer) -> FSDP2
(``fully_shard`` each vision layer and each LM decoder layer, then the root).

The model files stay free of all of this. A training module (model.py, bagel_model.py) names what to act on:
``freeze(freeze_vision)``, ``layer_methods()`` (decoder layers and the method its forward calls: Janus'
``forward_dense``, which FSDP2 is told is a forward method, or ``forward``), ``shard_units()`` and
``supports_compile``.
"""
from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import nn
from torch.utils.checkpoint import checkpoint



@dataclass(frozen=True)
class ParallelConfig:
    activation_checkpointing: bool = False
    compile: bool = False
    freeze_vision: bool = False  # the SigLIP tower (its aligner stays trainable)
    param_dtype: str = "fp32"  # FSDP2 MixedPrecisionPolicy param dtype: "bf16" (GPU) or "fp32"

    def __post_init__(self):
        if self.param_dtype not in ("bf16", "fp32"):
            raise ValueError(f"param_dtype must be 'bf16' or 'fp32', got {self.param_dtype!r}")


def freeze(model, cfg: ParallelConfig) -> None:
    model.freeze(cfg.freeze_vision)


def _checkpointed(method):
    def run(*args, **kwargs):
        return checkpoint(method, *args, use_reentrant=False, **kwargs)

    return run


def apply_activation_checkpointing(model) -> None:
    for layer, method in model.layer_methods():
        setattr(layer, method, _checkpointed(getattr(layer, method)))


def apply_compile(model) -> None:
    if not model.supports_compile:
        raise ValueError(f"--compile is not supported for {type(model).__name__} yet")
    for layer, method in model.layer_methods():
        setattr(layer, method, torch.compile(getattr(layer, method)))


def apply_fsdp(model, mesh, param_dtype: torch.dtype, reduce_dtype: torch.dtype = torch.float32) -> None:
    from torch.distributed.fsdp import MixedPrecisionPolicy, fully_shard, register_fsdp_forward_method

    policy = MixedPrecisionPolicy(param_dtype=param_dtype, reduce_dtype=reduce_dtype)
    for layer, method in model.shard_units():
        fully_shard(layer, mesh=mesh, mp_policy=policy)
        if method != "forward":
            register_fsdp_forward_method(layer, method)
    fully_shard(model, mesh=mesh, mp_policy=policy)


def parallelize(model, cfg: ParallelConfig, mesh=None) -> nn.Module:
    """``mesh`` (a 1-D DeviceMesh) turns on FSDP2; without it only freezing, checkpointing and compile apply."""
    freeze(model, cfg)
    if cfg.activation_checkpointing:
        apply_activation_checkpointing(model)
    if cfg.compile:
        apply_compile(model)
    if mesh is not None:
        apply_fsdp(model, mesh, torch.bfloat16 if cfg.param_dtype == "bf16" else torch.float32)
    return model
