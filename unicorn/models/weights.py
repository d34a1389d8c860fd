"""Reading checkpoint weight files shard by shard into an already-built module.

Only one shard is resident at a time (safetensors are read tensor by tensor; .bin shards are memory-mapped
where the format allows), so a 14 GB checkpoint never exists twice in memory.
"""
from __future__ import annotations

import json
import os
from collections.abc import Callable, Iterator
from dataclasses import dataclass

import torch
from torch import nn

from unicorn.models.errors import CheckpointError

WEIGHT_LAYOUTS = (
    "model.safetensors.index.json",
    "model.safetensors",
    "pytorch_model.bin.index.json",
    "pytorch_model.bin",
)

# Maps one checkpoint tensor to the module's parameters: [(name, tensor)], [] to drop it, None if unknown.
KeyMapper = Callable[[str, torch.Tensor], "list[tuple[str, torch.Tensor]] | None"]


@dataclass(frozen=True)
class WeightShard:
    file: str  # path
    expected_keys: frozenset[str] | None  # from the index, when there is one


def find_weight_shards(path: str) -> list[WeightShard]:
    """The checkpoint's weight files, in load order; raises CheckpointError listing what was expected."""
    for name in WEIGHT_LAYOUTS:
        file = os.path.join(path, name)
        if not os.path.exists(file):
            continue
        if not name.endswith(".index.json"):
            return [WeightShard(file, None)]
        with open(file) as f:
            weight_map = json.load(f).get("weight_map")
        if not isinstance(weight_map, dict) or not weight_map:
            raise CheckpointError(f"{file} has no 'weight_map'")
        by_shard: dict[str, set[str]] = {}
        for key, shard in weight_map.items():
            by_shard.setdefault(shard, set()).add(key)
        absent = sorted(s for s in by_shard if not os.path.exists(os.path.join(path, s)))
        if absent:
            raise CheckpointError(f"{path}: shards listed in {name} are missing: {', '.join(absent)}")
        return [WeightShard(os.path.join(path, s), frozenset(keys)) for s, keys in sorted(by_shard.items())]
    present = sorted(os.listdir(path)) if os.path.isdir(path) else []
    raise CheckpointError(
        f"{path}: no weights found; expected one of {', '.join(WEIGHT_LAYOUTS)} (with its shards); "
        f"found: {', '.join(present[:12]) or 'nothing'}"
    )


def _unreadable(file: str, err: Exception) -> CheckpointError:
    reason = (str(err).strip().splitlines() or [type(err).__name__])[0]
    return CheckpointError(f"{file}: cannot read the weights (truncated or corrupt?): {reason}")


def _iter_safetensors(file: str) -> Iterator[tuple[str, torch.Tensor]]:
    from safetensors import safe_open

    try:
        with safe_open(file, framework="pt", device="cpu") as f:
            for key in f.keys():
                yield key, f.get_tensor(key)
    except Exception as err:  # noqa: BLE001 - safetensors raises its own error types (and OSError)
        raise _unreadable(file, err) from None


def _load_bin(file: str):
    try:
        try:
            return torch.load(file, map_location="cpu", weights_only=True, mmap=True)
        except RuntimeError:  # legacy (non-zip) torch.save format cannot be memory-mapped
            return torch.load(file, map_location="cpu", weights_only=True)
    except Exception as err:  # noqa: BLE001 - a truncated zip, a bad pickle, an unsafe global
        raise _unreadable(file, err) from None


def iter_shard(shard: WeightShard) -> Iterator[tuple[str, torch.Tensor]]:
    """Yields (key, tensor) of one shard; a file that cannot be read raises CheckpointError naming it."""
    if shard.file.endswith(".safetensors"):
        yield from _iter_safetensors(shard.file)
        return
    state = _load_bin(shard.file)
    if not isinstance(state, dict):
        raise CheckpointError(f"{shard.file} does not hold a state dict")
    for key in list(state):
        yield key, state.pop(key)


def iter_shard_shapes(shard: WeightShard) -> Iterator[tuple[str, torch.Tensor]]:
    """Like :func:`iter_shard` but yields meta tensors of each tensor's shape (safetensors: the header only, no
    data read), so a key mapper can be run to check names and shapes before any weight is copied."""
    if not shard.file.endswith(".safetensors"):
        for key, tensor in iter_shard(shard):  # memory-mapped where the format allows
            yield key, torch.empty(tensor.shape, device="meta", dtype=tensor.dtype)
        return
    from safetensors import safe_open

    try:
        with safe_open(shard.file, framework="pt", device="cpu") as f:
            shapes = [(key, f.get_slice(key).get_shape()) for key in f.keys()]
    except Exception as err:  # noqa: BLE001 - safetensors raises its own error types (and OSError)
        raise _unreadable(shard.file, err) from None
    for key, shape in shapes:
        yield key, torch.empty(shape, device="meta")


def load_weights(
    module: nn.Module,
    shards: list[WeightShard],
    map_key: KeyMapper,
    *,
    optional: set[str] = frozenset(),
    describe: Callable[[str], str] = lambda name: name,
) -> set[str]:
    """Copies every shard's tensors into ``module``'s parameters (cast to their dtype and device).

    Raises CheckpointError for a tensor that maps to nothing, a shape mismatch, a key the index promised but its
    shard lacks, or a parameter that no file provided (unless it is in ``optional``). Returns the names loaded.
    """
    params = dict(module.named_parameters())
    loaded: set[str] = set()
    for shard in shards:
        seen: set[str] = set()
        unexpected: list[str] = []
        for key, tensor in iter_shard(shard):
            seen.add(key)
            targets = map_key(key, tensor)
            if targets is None:
                unexpected.append(key)
                continue
            for name, value in targets:
                param = params.get(name)
                if param is None:
                    unexpected.append(key)
                    continue
                if tuple(value.shape) != tuple(param.shape):
                    raise CheckpointError(
                        f"tensor {key!r} in {os.path.basename(shard.file)} has shape {tuple(value.shape)}, "
                        f"expected {tuple(param.shape)}"
                    )
                with torch.no_grad():
                    param.copy_(value)
                loaded.add(name)
        if unexpected:
            few = ", ".join(sorted(unexpected)[:5])
            raise CheckpointError(
                f"{len(unexpected)} unexpected tensor(s) in {os.path.basename(shard.file)}: {few}"
                + (" ..." if len(unexpected) > 5 else "")
            )
        if shard.expected_keys is not None and not shard.expected_keys <= seen:
            lost = sorted(shard.expected_keys - seen)
            raise CheckpointError(
                f"tensor {lost[0]!r} is listed in the index for {os.path.basename(shard.file)} but is not in that file"
                + (f" (and {len(lost) - 1} more)" if len(lost) > 1 else "")
            )
    missing = [name for name in params if name not in loaded and name not in optional]
    if missing:
        files = ", ".join(os.path.basename(s.file) for s in shards)
        raise CheckpointError(
            f"missing tensor {describe(missing[0])!r} (not in {files})"
            + (f"; {len(missing) - 1} more missing" if len(missing) > 1 else "")
        )
    return loaded
