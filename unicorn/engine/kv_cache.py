"""Sizes and allocates the paged KV cache tensors from a memory budget."""
from __future__ import annotations

import math
import mmap

import torch

from unicorn.attention import KVCache


def num_blocks_for_budget(budget_bytes: int, block_size: int, bytes_per_token: int) -> int:
    return max(0, budget_bytes // (block_size * bytes_per_token))


def default_kv_budget(device: torch.device, memory_fraction: float) -> int:
    """Bytes for the KV cache: a fraction of the device's free memory (GPU) or of available RAM (CPU)."""
    if device.type == "cuda":
        free, _total = torch.cuda.mem_get_info(device)
        return int(free * memory_fraction)
    try:
        with open("/proc/meminfo") as f:
            info = {line.split(":")[0]: int(line.split()[1]) * 1024 for line in f}
        available = info.get("MemAvailable", 8 << 30)
    except OSError:
        available = 8 << 30
    # On CPU the cache shares RAM with everything else: take a modest share, at most 4 GiB by default.
    return int(min(available * memory_fraction * 0.5, 4 << 30))


def allocate_kv_caches(
    num_layers: int, num_blocks: int, block_size: int, num_kv_heads: int, head_dim: int,
    dtype: torch.dtype, device: torch.device,
) -> list[KVCache]:
    """One KVCache per layer, zeroed (on a CPU, lazily: see _zeros and populate_kv_caches)."""
    shape = (num_blocks, block_size, num_kv_heads, head_dim)
    return [KVCache(_zeros(shape, dtype, device), _zeros(shape, dtype, device)) for _ in range(num_layers)]


def populate_kv_caches(caches: list[KVCache]) -> None:
    """Writes every page of CPU caches (zeros, as they are), so that no block's first use in a step waits for the
    kernel to map and zero its pages. In a VM whose host backs guest memory on first touch, as here, such a fault
    costs ~25 us per 4 KiB page: janus-mid's 8 x 8 decode step wrote ~4 MB of new KV, ~30 ms of faults, 15-25 %
    of the step. GPU caches are written by torch.zeros already."""
    for cache in caches:
        for tensor in (cache.key, cache.value):
            if tensor.device.type == "cpu":
                tensor.view(torch.uint8).zero_()  # bytes: fill_ has no fp8 kernel on CPU


def _zeros(shape: tuple[int, ...], dtype: torch.dtype, device: torch.device) -> torch.Tensor:
    if torch.device(device).type != "cpu":
        return torch.zeros(shape, dtype=dtype, device=device)
    # An anonymous mapping is zeroed by the kernel one page at a time, when first touched: a pool sized for the
    # worst case costs only the blocks used (torch.zeros writes every byte at start-up). Private, not mmap's
    # default shared (shmem) mapping: first touches cost 0.33-0.34 against 0.46-0.54 s per GiB here. The tensor
    # keeps the mapping alive.
    nbytes = max(1, math.prod(shape) * dtype.itemsize)
    pages = mmap.mmap(-1, nbytes, flags=mmap.MAP_PRIVATE | mmap.MAP_ANONYMOUS)
    return torch.frombuffer(pages, dtype=torch.uint8).view(dtype).view(shape)


def copy_blocks(caches: list[KVCache], copies: list[tuple[int, int]]) -> None:
    """Copy-on-write: block ``dst`` takes the content of block ``src`` in every layer."""
    if not copies:
        return
    device = caches[0].key.device
    src = torch.tensor([s for s, _ in copies], dtype=torch.long, device=device)
    dst = torch.tensor([d for _, d in copies], dtype=torch.long, device=device)
    for cache in caches:
        for tensor in (cache.key, cache.value):
            raw = tensor.view(torch.uint8)  # bytes: index_copy_ has no fp8 kernel on CPU
            raw.index_copy_(0, dst, raw.index_select(0, src))
