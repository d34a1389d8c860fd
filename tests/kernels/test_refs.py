"""The torch references on CPU (no Triton needed): the sampling contract and the dispatchers' CPU path."""
import math

import torch
import torch.nn.functional as F

from unicorn.kernels import dispatch
from unicorn.kernels.rmsnorm import rms_norm_ref
from unicorn.kernels.sampling import _kept_mask_ref, cfg_logits_ref, sample_ref, uniform_noise_ref


def test_noise_is_a_pure_function_of_seed_step_index():
    seeds = torch.tensor([0, 1, -1, 2**40, 2**63 - 1])
    steps = torch.tensor([0, 0, 7, 2**32 + 5, 3])
    u = uniform_noise_ref(seeds, steps, 1000)
    assert u.dtype == torch.float32 and u.shape == (5, 1000)
    assert (u > 0).all() and (u < 1).all()
    assert torch.equal(u[2:3], uniform_noise_ref(seeds[2:3], steps[2:3], 1000))
    assert torch.equal(u[:, :10], uniform_noise_ref(seeds, steps, 10))
    # Distinct rows/steps differ; the values look uniform.
    assert not torch.equal(u[0], u[1])
    assert not torch.equal(uniform_noise_ref(seeds, steps + 1, 1000), u)
    big = uniform_noise_ref(torch.tensor([3]), torch.tensor([4]), 200_000)[0]
    assert abs(big.mean().item() - 0.5) < 0.005 and abs(big.var().item() - 1 / 12) < 0.002


def test_noise_known_values():
    # Pins the hash: the engine's sampler, the Triton kernel and csrc/sampling.cu must all produce these.
    u = uniform_noise_ref(torch.tensor([0, 1234]), torch.tensor([0, 5]), 3)
    bits = (u.double() * 2**23 - 0.5).long()  # the 23 hash bits behind each uniform
    assert bits.tolist() == KNOWN_BITS


KNOWN_BITS = [[4840752, 4702547, 743030], [7737942, 470739, 869022]]


def test_kept_mask_matches_brute_force():
    gen = torch.Generator().manual_seed(0)
    s = torch.randn(4, 50, generator=gen)
    top_k = torch.tensor([0, 5, 50, 10])
    top_p = torch.tensor([0.5, 1.0, 0.9, 0.7])
    keep = _kept_mask_ref(s, top_k, top_p)
    for r in range(4):
        order = s[r].argsort(descending=True)
        kept = order[: top_k[r]] if 0 < top_k[r] < 50 else order
        probs = s[r, kept].softmax(-1)
        above = torch.cumsum(probs, 0) - probs
        final = set(kept[above < top_p[r]].tolist()) if top_p[r] < 1 else set(kept.tolist())
        assert set(keep[r].nonzero().flatten().tolist()) == final


def test_sample_ref_greedy_topk1_and_distribution():
    gen = torch.Generator().manual_seed(1)
    logits = torch.randn(3, 64, generator=gen)
    zeros, ones = torch.zeros(3), torch.ones(3)
    ids = sample_ref(logits, zeros, torch.zeros(3, dtype=torch.long), ones, torch.arange(3), torch.zeros(3))
    assert torch.equal(ids, logits.argmax(-1))
    ids = sample_ref(logits, ones, torch.ones(3, dtype=torch.long), ones, torch.arange(3), torch.zeros(3))
    assert torch.equal(ids, logits.argmax(-1))
    row = torch.tensor([1.0, 0.0, -1.0, 2.0])
    n = 20000
    ids = sample_ref(row.repeat(n, 1), torch.full((n,), 1.0), torch.zeros(n, dtype=torch.long), torch.ones(n),
                     torch.full((n,), 5), torch.arange(n))
    freq = torch.bincount(ids, minlength=4).float() / n
    assert (freq - row.softmax(-1)).abs().max() < 0.015


def test_cfg_combine():
    c, u = torch.randn(2, 5), torch.randn(2, 5)
    torch.testing.assert_close(cfg_logits_ref(c, u, torch.tensor([1.0, 3.0])),
                               torch.stack([c[0], u[1] + 3 * (c[1] - u[1])]))


def test_rms_norm_ref_matches_llama_formula():
    x = torch.randn(3, 32, dtype=torch.bfloat16)
    w = torch.rand(32, dtype=torch.bfloat16)
    h = x.float()
    want = w * (h * torch.rsqrt(h.pow(2).mean(-1, keepdim=True) + 1e-5)).to(torch.bfloat16)
    assert torch.equal(rms_norm_ref(x, w, 1e-5), want)


def test_dispatch_cpu_uses_references():
    x = torch.randn(4, 16)
    assert not dispatch.use_triton(x)
    torch.testing.assert_close(dispatch.silu_and_mul(x), F.silu(x[:, :8]) * x[:, 8:])
    out, res = dispatch.rms_norm(x, torch.ones(16), 1e-6, residual=torch.ones(4, 16))
    torch.testing.assert_close(res, x + 1)
    q, k = torch.randn(2, 3, 8), torch.randn(2, 1, 8)
    q0 = q.clone()
    dispatch.apply_rope(q, k, torch.tensor([0, 1]))
    torch.testing.assert_close(q[0], q0[0])  # position 0 is the identity
    assert math.isclose(q[1].norm().item(), q0[1].norm().item(), rel_tol=1e-5)
