"""New weights into an already-built model, in place (what ``Engine.update_weights`` calls).

Sources:

* a checkpoint directory in any registered layout: config.json's ``model_type`` picks the key mapping
  (``janus``: transformers' layout, as ``unicorn train --export`` writes it; ``multi_modality``: DeepSeek's
  original layout). Its weights are read twice: once for names and shapes only (safetensors headers), once to copy,
  shard by shard, so the checkpoint is never resident in host memory as a whole.
* a state dict keyed by the model's own parameter names, as ``model.state_dict()`` and the trainer's
  ``Trainer.full_janus_state_dict()`` give them (``language_model.layers.0...``, ``lm_head.weight``). Checkpoint
  keys (``model.language_model...``) are refused: save them as a checkpoint directory instead.

Every parameter must be given, except those under the model's ``frozen_modules`` (Janus: ``vqmodel``, the VQ codec
that training never changes and the trainer's state dict leaves out), which keep their values when absent. A tied
parameter (an lm_head tied to the embeddings) may be given under either name (both: the same values).

Nothing is copied until every name and shape has been checked: a bad source raises :class:`CheckpointError`, one
line naming the first unknown or missing tensor or the shape mismatch, and leaves the model as it was. The copies
go into the existing tensors (cast to their dtype and device), so every parameter keeps its storage, the pointers a
captured CUDA graph or a compiled kernel holds. Only the weights change: config, special ids, tokenizer and image
processing stay those the model was built with (shapes are checked; a hyperparameter that leaves every shape
unchanged, e.g. the RoPE base, is not).
"""
from __future__ import annotations

import os
from collections.abc import Callable, Mapping

import torch
from torch import nn

from unicorn.models.errors import CheckpointError
from unicorn.models.loader import read_config
from unicorn.models.registry import resolve_key_layout
from unicorn.models.weights import find_weight_shards, iter_shard, iter_shard_shapes

_STATE_DICT_KEYS = "state-dict keys are the model's parameter names, as model.state_dict() gives them"


def _is_frozen(name: str, frozen: tuple[str, ...]) -> bool:
    return any(name == m or name.startswith(m + ".") for m in frozen)


class _Targets:
    """The model's loadable tensors by every name (parameters and persistent buffers; a tied tensor has two)."""

    def __init__(self, model: nn.Module) -> None:
        self.tensors: dict[str, torch.Tensor] = model.state_dict(keep_vars=True)
        self.frozen = tuple(getattr(model, "frozen_modules", ()))
        self.given: dict[int, str] = {}  # id(tensor) -> the first name it was given under

    def check(self, name: str, shape, what: str) -> torch.Tensor | None:
        """The target of ``name`` after checking its shape (None: no such tensor)."""
        target = self.tensors.get(name)
        if target is None:
            return None
        if tuple(shape) != tuple(target.shape):
            raise CheckpointError(f"{what} has shape {tuple(shape)}, expected {tuple(target.shape)}")
        self.given.setdefault(id(target), name)
        return target

    def check_complete(self, describe: Callable[[str], str], where: str) -> None:
        missing: list[str] = []
        seen: set[int] = set(self.given)
        for name, tensor in self.tensors.items():
            if id(tensor) not in seen and not _is_frozen(name, self.frozen):
                seen.add(id(tensor))
                missing.append(name)
        if missing:
            raise CheckpointError(
                f"missing tensor {describe(missing[0])!r} ({where})"
                + (f"; {len(missing) - 1} more missing" if len(missing) > 1 else "")
            )


def _plan_state_dict(model: nn.Module, state: Mapping[str, torch.Tensor]) -> Callable[[], None]:
    targets = _Targets(model)
    copies: list[tuple[torch.Tensor, torch.Tensor]] = []
    first_value: dict[int, tuple[str, torch.Tensor]] = {}
    for key, value in state.items():
        if not isinstance(value, torch.Tensor):
            raise CheckpointError(f"state-dict entry {key!r} is a {type(value).__name__}, not a tensor")
        target = targets.check(key, value.shape, f"state-dict tensor {key!r}")
        if target is None:
            raise CheckpointError(f"unknown state-dict key {key!r} ({_STATE_DICT_KEYS})")
        if id(target) in first_value:  # a tied tensor given under both names
            other, previous = first_value[id(target)]
            if previous is not value and not torch.equal(previous.to(value.device), value):
                raise CheckpointError(f"state-dict tensors {other!r} and {key!r} are tied but differ")
            continue
        first_value[id(target)] = (key, value)
        copies.append((target, value))
    targets.check_complete(lambda n: n, "not in the state dict")

    def apply() -> None:
        with torch.no_grad():
            for target, value in copies:
                target.copy_(value)

    return apply


def _plan_directory(model: nn.Module, path: str) -> Callable[[], None]:
    config = read_config(path)
    map_key, describe = resolve_key_layout(config)
    shards = find_weight_shards(path)
    targets = _Targets(model)
    for shard in shards:
        file = os.path.basename(shard.file)
        seen: set[str] = set()
        for key, meta in iter_shard_shapes(shard):
            seen.add(key)
            mapped = map_key(key, meta)
            if mapped is None:
                raise CheckpointError(f"unknown tensor {key!r} in {file} (model_type {config.get('model_type')!r})")
            for name, value in mapped:
                if targets.check(name, value.shape, f"tensor {key!r} in {file}") is None:
                    raise CheckpointError(f"unknown tensor {key!r} in {file} (the model has no {name!r})")
        if shard.expected_keys is not None and not shard.expected_keys <= seen:
            lost = sorted(shard.expected_keys - seen)
            raise CheckpointError(f"tensor {lost[0]!r} is listed in the index for {file} but is not in that file")
    targets.check_complete(describe, "not in " + ", ".join(os.path.basename(s.file) for s in shards))

    def apply() -> None:
        try:
            with torch.no_grad():
                for shard in shards:
                    for key, tensor in iter_shard(shard):
                        for name, value in map_key(key, tensor):
                            targets.tensors[name].copy_(value)
        except CheckpointError as err:  # the files changed or went bad between the two reads
            raise CheckpointError(f"{err}; the model now holds a mix of old and new weights, load again") from None

    return apply


def prepare_weight_update(model: nn.Module, source: str | os.PathLike | Mapping[str, torch.Tensor]) -> Callable[[], None]:
    """Checks ``source`` (a checkpoint directory or a state dict, see the module docstring) against ``model``'s
    names and shapes without copying anything; returns the function that copies it in (into the same tensor
    objects, whatever their storage is by then). Raises CheckpointError."""
    if isinstance(source, (str, os.PathLike)):
        return _plan_directory(model, os.fspath(source))
    if isinstance(source, Mapping):
        return _plan_state_dict(model, source)
    raise CheckpointError(f"weights must be a checkpoint directory or a state dict, got {type(source).__name__}")


def load_weights_in_place(model: nn.Module, source: str | os.PathLike | Mapping[str, torch.Tensor]) -> None:
    """Validates ``source`` fully, then copies it into ``model``'s existing tensors (see the module docstring)."""
    prepare_weight_update(model, source)()
