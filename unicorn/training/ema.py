"""An exponential moving average of the trainable weights (method.md §4: the official recipe keeps one at 0.99).

After every optimizer step ``ema = decay * ema + (1 - decay) * w``, in fp32 whatever the weights' dtype. Each rank
keeps the average of the part of every weight it owns, so nothing is gathered during training:

    single     the whole parameter
    fsdp2      the DTensor's local shard
    deepspeed  ZeRO-3: the rank's partition (``ds_tensor``); ZeRO-0/1/2: the full parameter (every rank holds it)

Checkpoints hold each rank's shards (``ema/rank_<r>.pt``); resuming needs the same backend and world size, which the
checkpoint's meta.json already enforces, so a resumed average is bit-identical to an uninterrupted one. Exporting
the average swaps it into the weights, gathers the full state as for the raw weights, and swaps the weights back.
"""
from __future__ import annotations

import contextlib
import os

import torch

EMA_FORMAT = 1


def local_views(backend) -> list[tuple[str, torch.Tensor]]:
    """(name, the tensor this rank owns) per trainable parameter; writing into the view writes the parameter."""
    module = backend.engine.module if backend.name == "deepspeed" else backend.module
    views = []
    for name, p in module.named_parameters():
        if not p.requires_grad:
            continue
        if hasattr(p, "ds_tensor"):  # ZeRO-3 partition (flat, padded)
            views.append((name, p.ds_tensor.data))
        elif hasattr(p, "to_local"):  # FSDP2 DTensor shard
            views.append((name, p.to_local().data))
        else:
            views.append((name, p.data))
    return views


class EMA:
    def __init__(self, backend, decay: float):
        if not 0.0 < decay < 1.0:
            raise ValueError(f"--ema must be in (0, 1), got {decay}")
        self.backend, self.decay = backend, float(decay)
        views = local_views(backend)
        self.names = [n for n, _ in views]
        with torch.no_grad():
            self.shadow = [v.detach().to(torch.float32, copy=True) for _, v in views]

    @property
    def views(self) -> list[torch.Tensor]:
        # looked up on every use: ZeRO-3 may give a parameter a new partition tensor after its first step
        views = local_views(self.backend)
        if [n for n, _ in views] != self.names:
            raise RuntimeError("the trainable parameters changed since the EMA was created")
        return [v for _, v in views]

    @torch.no_grad()
    def update(self) -> None:
        current = [v.to(torch.float32) for v in self.views]
        torch._foreach_mul_(self.shadow, self.decay)
        torch._foreach_add_(self.shadow, current, alpha=1.0 - self.decay)

    # ---- checkpoints --------------------------------------------------------------------------------------------
    def _file(self, path: str, rank: int) -> str:
        return os.path.join(path, "ema", f"rank_{rank}.pt")

    def save(self, path: str, rank: int) -> None:
        os.makedirs(os.path.join(path, "ema"), exist_ok=True)
        torch.save({"format": EMA_FORMAT, "decay": self.decay, "names": list(self.names), "shadow": self.shadow},
                   self._file(path, rank))

    def load(self, path: str, rank: int) -> None:
        from unicorn.training.checkpoint import ResumeError

        file = self._file(path, rank)
        if not os.path.exists(file):
            raise ResumeError(f"{path} holds no EMA weights ({file} is missing): resume without --ema, or start anew")
        state = torch.load(file, weights_only=True)
        if list(state["names"]) != list(self.names) or state["decay"] != self.decay:
            raise ResumeError(f"{file}: its EMA (decay {state['decay']}, {len(state['names'])} tensors) is not this "
                              f"run's (decay {self.decay}, {len(self.names)} tensors)")
        for mine, saved in zip(self.shadow, state["shadow"]):
            if mine.shape != saved.shape:
                raise ResumeError(f"{file}: an EMA shard of shape {tuple(saved.shape)} where this run has "
                                  f"{tuple(mine.shape)}")
            mine.copy_(saved)

    # ---- export -------------------------------------------------------------------------------------------------
    @contextlib.contextmanager
    def swapped_in(self):
        """The weights hold the average inside the block (for gathering a full state dict), their own values after."""
        views = self.views
        with torch.no_grad():
            saved = [v.clone() for v in views]
            for v, s in zip(views, self.shadow):
                v.copy_(s)
        try:
            yield
        finally:
            with torch.no_grad():
                for v, s in zip(views, saved):
                    v.copy_(s)

    def gathered_zero3(self) -> dict[str, torch.Tensor]:
        """ZeRO-3: the full average of every parameter (a collective), from each rank's partition of the flattened
        parameter (rank r holds elements [r * size, (r + 1) * size), zero-padded). Swapping into the partitions is
        not enough there: a parameter DeepSpeed still holds gathered (e.g. the last one used) would be exported from
        its full copy of the raw weights."""
        import torch.distributed as dist

        params = dict(self.backend.engine.module.named_parameters())
        world = dist.get_world_size()
        out = {}
        for name, shard in zip(self.names, self.shadow):
            parts = [torch.empty_like(shard) for _ in range(world)]
            dist.all_gather(parts, shard.contiguous())
            p = params[name]
            out[name] = torch.cat(parts)[: p.ds_numel].view(p.ds_shape)
        return out

    def state_by_name(self) -> dict[str, torch.Tensor]:
        """This rank's shards by parameter name (for tests and inspection)."""
        return dict(zip(self.names, self.shadow))
