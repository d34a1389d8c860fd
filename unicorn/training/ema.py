"""An exponential moving average of the trainable weights, updated after every optimizer step
(``ema <- decay * ema + (1 - decay) * weight``; the official BAGEL fine-tuning keeps one at 0.99 and evaluates it).

The shadow tensors have the parameters' own layout: plain tensors in one process, the local shards (DTensors)
under FSDP2, so the update is local and the checkpoint (torch.distributed.checkpoint) saves them sharded.
"""
from __future__ import annotations

import torch
from torch import nn


class EMA:
    def __init__(self, module: nn.Module, decay: float):
        if not 0.0 < decay < 1.0:
            raise ValueError(f"--ema must be in (0, 1), got {decay}")
        self.decay = decay
        self.shadow = {name: p.detach().clone() for name, p in module.named_parameters() if p.requires_grad}

    @torch.no_grad()
    def update(self, module: nn.Module) -> None:
        params = dict(module.named_parameters())
        for name, value in self.shadow.items():
            value.lerp_(params[name].detach(), 1.0 - self.decay)

    def full_state_dict(self) -> dict[str, torch.Tensor]:
        """Every shadow tensor whole, on the CPU (a collective under FSDP2: every rank calls it)."""
        out = {}
        for name, value in self.shadow.items():
            full = value.full_tensor() if hasattr(value, "full_tensor") else value
            out[name] = full.detach().cpu()
        return out
