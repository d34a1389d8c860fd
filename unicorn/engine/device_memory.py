"""Moving a model's tensors off its device and back, for ``Engine.sleep`` / ``Engine.wake_up``.

Each parameter and buffer object stays the same (only its ``.data`` is swapped), so tied parameters stay tied and
whatever holds the objects (the engine, the runner, a weight update planned while asleep) still holds them. The
device storage after a wake-up is new, though: a runner that captured CUDA graphs would capture them again.
"""
from __future__ import annotations

import torch
from torch import nn


def _unique_tensors(module: nn.Module) -> list[torch.Tensor]:
    seen: set[int] = set()
    out = []
    for tensor in [*module.parameters(), *module.buffers()]:
        if id(tensor) not in seen:
            seen.add(id(tensor))
            out.append(tensor)
    return out


def offload_to_host(module: nn.Module) -> None:
    """Moves every tensor that is not in host memory there (pinned when CUDA is available, so the copy back is a
    fast DMA); tensors already on the CPU stay as they are."""
    pin = torch.cuda.is_available()
    for tensor in _unique_tensors(module):
        if tensor.device.type == "cpu" or is_discarded(tensor):
            continue
        host = torch.empty(tensor.shape, dtype=tensor.dtype, device="cpu", pin_memory=pin)
        host.copy_(tensor.data)
        tensor.data = host


def _storage_bytes(tensor: torch.Tensor) -> int:
    """Bytes of storage ``tensor`` spans (its storage offset plus its strided extent)."""
    if tensor.numel() == 0:
        return 0
    extent = tensor.storage_offset() + sum((n - 1) * st for n, st in zip(tensor.shape, tensor.stride())) + 1
    return extent * tensor.element_size()


def is_discarded(tensor: torch.Tensor) -> bool:
    """Whether :func:`discard_loadable` freed the tensor's storage (its shape and dtype stay)."""
    return tensor.numel() > 0 and tensor.untyped_storage().nbytes() == 0


def discard_loadable(module: nn.Module, keep_modules: tuple[str, ...] = ()) -> None:
    """Frees the storage of the tensors a checkpoint provides (parameters and persistent buffers), keeping each
    tensor's shape, dtype and device (its storage is resized to 0 bytes, as FSDP frees unsharded parameters), so
    a weight load can be checked against it before the memory comes back. The rest goes to host memory as in
    :func:`offload_to_host`: derived buffers (RoPE frequencies), which no checkpoint brings back, and the
    submodules named in ``keep_modules`` (the model's frozen modules, which a trainer's state dict leaves out).
    A discarded tensor must not be read until :func:`restore_to_device`."""
    kept = tuple(keep_modules)
    loadable = {id(t) for name, t in module.state_dict(keep_vars=True).items()
                if not any(name == m or name.startswith(m + ".") for m in kept)}
    for tensor in _unique_tensors(module):
        if id(tensor) in loadable:
            tensor.untyped_storage().resize_(0)
    offload_to_host(module)  # the tensors kept (discarded ones hold no bytes, and stay where they are)


def restore_to_device(module: nn.Module, device: torch.device) -> None:
    """Brings every tensor back to ``device``: host copies are copied in, discarded ones get new, uninitialised
    storage, for a weight load to fill."""
    tensors = _unique_tensors(module)
    # Tensors may share one storage (slices of one fused weight, see unicorn.models.layers.FusedLinears): it
    # comes back once, at the extent of all of them.
    extents: dict[int, tuple[torch.UntypedStorage, int]] = {}
    for tensor in tensors:
        if is_discarded(tensor):
            storage = tensor.untyped_storage()
            _, extent = extents.get(storage._cdata, (storage, 0))
            extents[storage._cdata] = (storage, max(extent, _storage_bytes(tensor)))
    for storage, extent in extents.values():
        storage.resize_(extent)
    for tensor in tensors:
        if tensor.device != device and not tensor.is_meta:
            tensor.data = tensor.data.to(device)


def release_cached_device_memory(device: torch.device) -> None:
    """Hands the caching allocator's free blocks back to the driver (CUDA), so another process (the trainer) can
    use them; nothing to do on the CPU, where freed tensors go straight back to the allocator."""
    if device.type == "cuda":
        torch.cuda.synchronize(device)
        torch.cuda.empty_cache()
