"""Fused CFG combine + temperature + top-k/top-p + Gumbel-max sampling, batch-composition independent.

The scheme (shared by the torch reference and the Triton kernel, and the contract of the engine's sampler):

* logits ``x = uncond + cfg_scale * (cond - uncond)`` in fp32 (just ``cond`` without an unconditional row);
* temperature ``T == 0`` is greedy: ``argmax(x)`` (first index on ties);
* otherwise ``s = x / T``; top-k (``k > 0``) keeps ``s >= k-th largest s`` (ties at the threshold are kept);
  top-p (``p < 1``) keeps every token whose probability mass *strictly above it* (within the top-k set) is
  ``< p`` -- the smallest descending prefix holding ``p`` of the mass, ties kept together;
* the sample is ``argmax_j (s_j + g_j)`` over the kept set with ``g_j = -log(-log(u_j))``, which is a draw from
  ``softmax(s)`` restricted to that set (Gumbel-max);
* ``u_j = uniform(seed_r, t, j)`` is a pure counter-based hash of (row seed, decode step, vocab index), so a
  row's sample never depends on which other rows share its batch, and there is no host sync or RNG state.

The hash is :func:`_hash_keys_ref`/:func:`_mix32_ref` here and ``_row_keys``/``_mix32`` in the kernel
(lowbias32 finalizer rounds; all uint32 arithmetic). ``u = ((h >> 9) + 0.5) / 2**23``: 23 bits so that
``bits + 0.5`` is exact in fp32 and ``u`` is strictly inside (0, 1).
"""
from __future__ import annotations

import torch

from unicorn.kernels._triton_utils import tl, triton

_M32 = 0xFFFFFFFF
_MUL1 = 0x7FEB352D
_MUL2 = 0x846CA68B
_SALT_SEED_HI = 0x9E3779B9
_SALT_STEP = 0x85EBCA6B
_SALT_K2 = 0xC2B2AE35


# ----------------------------------------------------------------------------------------------- reference
def _mulmod32(x: torch.Tensor, c: int) -> torch.Tensor:
    # (x * c) mod 2^32 for 0 <= x < 2^32 without int64 overflow: split c into 16-bit halves.
    lo = x * (c & 0xFFFF)
    hi = ((x * (c >> 16)) & 0xFFFF) << 16
    return (lo + hi) & _M32


def _mix32_ref(x: torch.Tensor) -> torch.Tensor:
    """lowbias32 on int64 tensors holding uint32 values."""
    x = x ^ (x >> 16)
    x = _mulmod32(x, _MUL1)
    x = x ^ (x >> 15)
    x = _mulmod32(x, _MUL2)
    return x ^ (x >> 16)


def _hash_keys_ref(seeds: torch.Tensor, steps: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    seeds, steps = seeds.long(), steps.long()
    seed_lo, seed_hi = seeds & _M32, (seeds >> 32) & _M32
    k1 = _mix32_ref(seed_lo ^ _mix32_ref(seed_hi ^ _SALT_SEED_HI) ^ _mix32_ref((steps & _M32) ^ _SALT_STEP))
    return k1, _mix32_ref(k1 ^ _SALT_K2)


def uniform_noise_ref(seeds: torch.Tensor, steps: torch.Tensor, vocab: int) -> torch.Tensor:
    """seeds, steps: [B] int64 -> u: [B, vocab] float32 in (0, 1), u[r, j] = uniform(seeds[r], steps[r], j)."""
    k1, k2 = _hash_keys_ref(seeds, steps)
    j = torch.arange(vocab, dtype=torch.long, device=seeds.device)[None, :]
    h = _mix32_ref(_mix32_ref(k1[:, None] ^ j) ^ k2[:, None])
    return ((h >> 9).float() + 0.5) * (1.0 / 8388608.0)


def cfg_logits_ref(cond: torch.Tensor, uncond: torch.Tensor | None, scale) -> torch.Tensor:
    """uncond + scale * (cond - uncond) in fp32; ``scale`` is a float or a [B] tensor."""
    cond = cond.float()
    if uncond is None:
        return cond
    uncond = uncond.float()
    if isinstance(scale, torch.Tensor):
        scale = scale.float().reshape(-1, 1)
    return uncond + scale * (cond - uncond)


def _kept_mask_ref(s: torch.Tensor, top_k: torch.Tensor, top_p: torch.Tensor) -> torch.Tensor:
    batch, vocab = s.shape
    ordered = s.sort(dim=-1, descending=True).values
    k = top_k.long().to(s.device)
    k_on = (k > 0) & (k < vocab)
    kth = ordered.gather(1, (k.clamp(1, vocab) - 1)[:, None])
    keep = ~k_on[:, None] | (s >= kth)
    p = top_p.float().to(s.device)
    p_on = p < 1.0
    if bool(p_on.any()):
        masked = torch.where(keep, s, s.new_tensor(float("-inf")))
        ordered = masked.sort(dim=-1, descending=True).values
        probs = torch.exp(ordered - ordered[:, :1])
        probs = probs / probs.sum(-1, keepdim=True)
        mass_above = torch.cumsum(probs, dim=-1) - probs
        num_kept = (mass_above < p[:, None]).sum(-1).clamp(min=1)
        thresh = ordered.gather(1, (num_kept - 1)[:, None])
        keep = keep & (~p_on[:, None] | (s >= thresh))
    return keep


def sample_ref(
    logits: torch.Tensor,
    temperature: torch.Tensor,
    top_k: torch.Tensor,
    top_p: torch.Tensor,
    seeds: torch.Tensor,
    steps: torch.Tensor,
) -> torch.Tensor:
    """logits: [B, V] (already CFG-combined); temperature/top_p: [B] float; top_k/seeds/steps: [B] int.

    Returns ids [B] int64. top_k = 0 and top_p = 1.0 switch those filters off; temperature 0 is greedy.
    """
    x = logits.float()
    batch, vocab = x.shape
    temperature = temperature.float().to(x.device)
    greedy = temperature <= 0
    s = x / torch.where(greedy, torch.ones_like(temperature), temperature)[:, None] + 0.0
    keep = _kept_mask_ref(s, top_k, top_p)
    u = uniform_noise_ref(seeds.to(x.device), steps.to(x.device), vocab)
    z = torch.where(keep, s + (-torch.log(-torch.log(u))), s.new_tensor(float("-inf")))
    return torch.where(greedy, x.argmax(-1), z.argmax(-1))


def sample_full_ref(cond_logits, uncond_logits, cfg_scale, temperature, top_k, top_p, seeds, steps):
    """Reference of the fused :func:`sample` (same arguments)."""
    return sample_ref(cfg_logits_ref(cond_logits, uncond_logits, cfg_scale), temperature, top_k, top_p, seeds, steps)


def _as_int32(value: int) -> int:
    return value - (1 << 32) if value >= 1 << 31 else value


def _mix32_int32_(x: torch.Tensor) -> torch.Tensor:
    # lowbias32 in place on int32 tensors holding uint32 bits: products wrap mod 2^32, and the masks turn
    # the arithmetic right shifts into logical ones.
    x ^= (x >> 16) & 0xFFFF
    x *= _as_int32(_MUL1)
    x ^= (x >> 15) & 0x1FFFF
    x *= _as_int32(_MUL2)
    x ^= (x >> 16) & 0xFFFF
    return x


def uniform_noise_fast(seeds: torch.Tensor, steps: torch.Tensor, vocab: int) -> torch.Tensor:
    """Bit-identical to :func:`uniform_noise_ref`, in 32-bit in-place arithmetic (the CPU engine's hot path)."""
    k1, k2 = (torch.where(k >= 1 << 31, k - (1 << 32), k).to(torch.int32) for k in _hash_keys_ref(seeds, steps))
    h = torch.arange(vocab, dtype=torch.int32, device=seeds.device)[None, :] ^ k1[:, None]
    _mix32_int32_(h)
    h ^= k2[:, None]
    _mix32_int32_(h)
    return ((h >> 9) & 0x7FFFFF).float().add_(0.5).mul_(1.0 / 8388608.0)


def sample_fast(cond_logits, uncond_logits, cfg_scale, temperature, top_k, top_p, seeds, steps,
                cpu_ops=None, fused: bool = True) -> torch.Tensor:
    """Same ids as :func:`sample_full_ref`, skipping work no row needs (filters, noise for greedy rows).

    ``cpu_ops``: the compiled CPU module (unicorn.kernels.cpu_ops). Without top-k / top-p its fused, vectorised
    ``cfg_gumbel_argmax`` does everything in one pass per row (CFG, temperature, noise, arg-max; exact logs only
    where a fast log leaves the winner in doubt); with them, its one-pass ``gumbel_argmax`` replaces the noise,
    Gumbel and arg-max passes after the torch filters (and everywhere with ``fused=False``)."""
    vocab = cond_logits.shape[1]
    filtered = bool(((top_k > 0) & (top_k < vocab)).any() or (top_p < 1.0).any())
    if cpu_ops is not None and fused and not filtered:
        scale = cfg_scale if cfg_scale is not None else torch.ones_like(temperature)
        return cpu_ops.cfg_gumbel_argmax(cond_logits.float(), None if uncond_logits is None else uncond_logits.float(),
                                         scale, temperature, seeds, steps)
    x = cfg_logits_ref(cond_logits, uncond_logits, cfg_scale)
    greedy = temperature <= 0
    if bool(greedy.all()):
        return x.argmax(-1)
    s = x / torch.where(greedy, torch.ones_like(temperature), temperature)[:, None] + 0.0
    keep = _kept_mask_ref(s, top_k, top_p) if filtered else None
    if cpu_ops is not None:
        if keep is not None:
            s.masked_fill_(~keep, float("-inf"))
        return cpu_ops.gumbel_argmax(s, seeds, steps, temperature)
    z = s.add_(uniform_noise_fast(seeds, steps, vocab).log_().neg_().log_().neg_())
    if keep is not None:
        z.masked_fill_(~keep, float("-inf"))
    return torch.where(greedy, x.argmax(-1), z.argmax(-1))


# ----------------------------------------------------------------------------------------------- Triton
@triton.jit
def _mix32(x):
    x = x ^ (x >> 16)
    x = x * 0x7FEB352D
    x = x ^ (x >> 15)
    x = x * 0x846CA68B
    return x ^ (x >> 16)


@triton.jit
def _float_key(x):
    # Monotone map fp32 -> int32: a < b (as floats, no NaN, -0 normalised) iff key(a) < key(b).
    bits = x.to(tl.int32, bitcast=True)
    return tl.where(bits < 0, bits ^ 0x7FFFFFFF, bits)


@triton.jit
def _count_ge(s_ptr, vocab, v, BLOCK_V: tl.constexpr):
    count = 0
    for start in range(0, vocab, BLOCK_V):
        cols = start + tl.arange(0, BLOCK_V)
        key = _float_key(tl.load(s_ptr + cols, mask=cols < vocab, other=float("-inf")))
        count += tl.sum(((key >= v) & (cols < vocab)).to(tl.int32), axis=0)
    return count


@triton.jit
def _mass_above(s_ptr, vocab, v, k_thresh, row_max, BLOCK_V: tl.constexpr):
    mass = 0.0
    for start in range(0, vocab, BLOCK_V):
        cols = start + tl.arange(0, BLOCK_V)
        s = tl.load(s_ptr + cols, mask=cols < vocab, other=float("-inf"))
        key = _float_key(s)
        sel = (key > v) & (key >= k_thresh) & (cols < vocab)
        mass += tl.sum(tl.where(sel, tl.exp(s - row_max), 0.0), axis=0)
    return mass


@triton.jit
def _sample_kernel(
    cond_ptr, uncond_ptr, cfg_ptr, temp_ptr, top_k_ptr, top_p_ptr, seed_ptr, step_ptr, scratch_ptr, out_ptr,
    vocab, cond_stride, uncond_stride,
    HAS_UNCOND: tl.constexpr, BLOCK_V: tl.constexpr,
):
    row = tl.program_id(0)
    row64 = row.to(tl.int64)
    s_row = scratch_ptr + row64 * vocab
    temp = tl.load(temp_ptr + row).to(tl.float32)
    greedy = temp <= 0.0
    inv_t_div = tl.where(greedy, 1.0, temp)

    # Pass 1: CFG-combined, temperature-scaled logits into scratch; their max and min keys.
    key_min = 0x7FFFFFFF
    key_max = -0x7FFFFFFF - 1
    for start in range(0, vocab, BLOCK_V):
        cols = start + tl.arange(0, BLOCK_V)
        mask = cols < vocab
        x = tl.load(cond_ptr + row64 * cond_stride + cols, mask=mask, other=0.0).to(tl.float32)
        if HAS_UNCOND:
            scale = tl.load(cfg_ptr + row).to(tl.float32)
            u = tl.load(uncond_ptr + row64 * uncond_stride + cols, mask=mask, other=0.0).to(tl.float32)
            x = u + scale * (x - u)
        s = x / inv_t_div + 0.0
        tl.store(s_row + cols, s, mask=mask)
        key = _float_key(s)
        key_min = tl.minimum(key_min, tl.min(tl.where(mask, key, 0x7FFFFFFF), axis=0))
        key_max = tl.maximum(key_max, tl.max(tl.where(mask, key, -0x7FFFFFFF - 1), axis=0))
    tl.debug_barrier()

    # top-k: the k-th largest key by bisection (largest v with count(key >= v) >= k).
    k = tl.load(top_k_ptr + row).to(tl.int32)
    lo = key_min.to(tl.int64)
    hi = key_max.to(tl.int64)
    if (k > 0) & (k < vocab) & (~greedy):
        for _ in range(33):
            mid = lo + (hi - lo + 1) // 2
            ok = _count_ge(s_row, vocab, mid.to(tl.int32), BLOCK_V) >= k
            lo = tl.where(ok, mid, lo)
            hi = tl.where(ok, hi, mid - 1)
    k_thresh = lo.to(tl.int32)

    # top-p: the smallest v with (mass of kept keys > v) < p * Z.
    p = tl.load(top_p_ptr + row).to(tl.float32)
    max_bits = tl.where(key_max < 0, key_max ^ 0x7FFFFFFF, key_max)
    row_max = max_bits.to(tl.float32, bitcast=True)  # the largest s, exactly
    p_lo = k_thresh.to(tl.int64)
    if (p < 1.0) & (~greedy):
        total = _mass_above(s_row, vocab, k_thresh.to(tl.int64) - 1, k_thresh, row_max, BLOCK_V)
        p_hi = key_max.to(tl.int64)
        for _ in range(33):
            mid = p_lo + (p_hi - p_lo) // 2
            small = _mass_above(s_row, vocab, mid, k_thresh, row_max, BLOCK_V) < p * total
            p_hi = tl.where(small, mid, p_hi)
            p_lo = tl.where(small, p_lo, mid + 1)
    thresh = p_lo.to(tl.int32)

    # Final pass: Gumbel-max over the kept set (greedy: plain argmax), first index on ties.
    seed = tl.load(seed_ptr + row).to(tl.int64)
    step = tl.load(step_ptr + row).to(tl.int64)
    seed_lo = (seed & 0xFFFFFFFF).to(tl.uint32)
    seed_hi = ((seed >> 32) & 0xFFFFFFFF).to(tl.uint32)
    step_lo = (step & 0xFFFFFFFF).to(tl.uint32)
    k1 = _mix32(seed_lo ^ _mix32(seed_hi ^ 0x9E3779B9) ^ _mix32(step_lo ^ 0x85EBCA6B))
    k2 = _mix32(k1 ^ 0xC2B2AE35)
    best_val = float("-inf")
    best_idx = 0
    for start in range(0, vocab, BLOCK_V):
        cols = start + tl.arange(0, BLOCK_V)
        mask = cols < vocab
        s = tl.load(s_row + cols, mask=mask, other=float("-inf"))
        h = _mix32(_mix32(k1 ^ cols.to(tl.uint32)) ^ k2)
        u = ((h >> 9).to(tl.float32) + 0.5) * (1.0 / 8388608.0)
        g = -tl.log(-tl.log(u))
        z = tl.where(greedy, s, s + g)
        z = tl.where(mask & (_float_key(s) >= thresh), z, float("-inf"))
        chunk_val, chunk_idx = tl.max(z, axis=0, return_indices=True, return_indices_tie_break_left=True)
        better = chunk_val > best_val
        best_idx = tl.where(better, start + chunk_idx, best_idx)
        best_val = tl.where(better, chunk_val, best_val)
    tl.store(out_ptr + row, best_idx.to(tl.int64))


def sample(
    cond_logits: torch.Tensor,
    uncond_logits: torch.Tensor | None,
    cfg_scale: torch.Tensor | None,
    temperature: torch.Tensor,
    top_k: torch.Tensor,
    top_p: torch.Tensor,
    seeds: torch.Tensor,
    steps: torch.Tensor,
    block_v: int = 4096,
) -> torch.Tensor:
    """Fused CFG + temperature + top-k/top-p + Gumbel-max sampling; one program per row, no host sync.

    cond_logits, uncond_logits: [B, V] (any float dtype, last dim contiguous); cfg_scale, temperature, top_p:
    [B] float; top_k, seeds, steps: [B] int. Returns ids [B] int64, equal to :func:`sample_full_ref`.
    """
    batch, vocab = cond_logits.shape
    assert cond_logits.stride(-1) == 1
    has_uncond = uncond_logits is not None
    if has_uncond:
        assert uncond_logits.shape == cond_logits.shape and uncond_logits.stride(-1) == 1
        assert cfg_scale is not None
    out = torch.empty(batch, dtype=torch.long, device=cond_logits.device)
    if batch == 0:
        return out
    scratch = torch.empty(batch, vocab, dtype=torch.float32, device=cond_logits.device)
    block_v = min(block_v, triton.next_power_of_2(vocab))
    _sample_kernel[(batch,)](
        cond_logits, uncond_logits if has_uncond else cond_logits,
        cfg_scale if has_uncond else temperature,
        temperature, top_k, top_p, seeds, steps, scratch, out,
        vocab, cond_logits.stride(0), uncond_logits.stride(0) if has_uncond else 0,
        HAS_UNCOND=has_uncond, BLOCK_V=block_v, num_warps=8,
    )
    return out
