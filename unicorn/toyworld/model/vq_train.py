"""Trains Janus' VQ-16 image tokenizer (unicorn/models/vq.py) on toy-world renders, deterministically on CPU.

The quantiser matches ``VQModel.encode`` / ``decode``: encoder latents and codebook rows are both l2-normalised,
the nearest unit code is looked up and decoded. Training uses the straight-through estimator with the usual
codebook + commitment terms (VQ-VAE), and re-seeds codes unused for a while from current encoder outputs
(a deterministic choice: the rows with the largest quantisation error), which keeps a small codebook in use.
"""
from __future__ import annotations

import random
import time
from dataclasses import dataclass

import numpy as np
import torch
import torch.nn.functional as F

from unicorn.models.janus_config import VQArch
from unicorn.models.vq import VQModel
from unicorn.toyworld import corrupt
from unicorn.toyworld.render import render_array
from unicorn.toyworld.sampler import sample_scene
from unicorn.toyworld.scene import CATEGORIES


@dataclass(frozen=True)
class VQTrainConfig:
    num_images: int = 3000
    steps: int = 500
    batch_size: int = 16
    lr: float = 2e-3
    commitment: float = 0.25
    reseed_every: int = 25  # steps between re-seeding unused codes (0: never)
    seed: int = 0
    image_size: int = 64
    crop: int = 32  # train on aligned crops (4x cheaper; the codec is convolutional) ...
    full_fraction: float = 0.15  # ... then on whole images for this last fraction of the steps


def world_images(num: int, seed: int, size: int = 64) -> np.ndarray:
    """``num`` renders of random scenes over all categories (a third of them degraded): uint8 [N, S, S, 3]."""
    rng = random.Random(f"vq:{seed}")
    nrng = np.random.default_rng(seed)
    out = np.empty((num, size, size, 3), dtype=np.uint8)
    for i in range(num):
        scene = sample_scene(CATEGORIES[i % len(CATEGORIES)], rng)
        rgb = render_array(scene, size)
        if i % 3 == 2:
            rgb = corrupt.degrade(rgb, nrng, strength=float(nrng.uniform(0.3, 1.0)))
        out[i] = rgb
    return out


def to_pixels(rgb: np.ndarray) -> torch.Tensor:
    """uint8 [N, S, S, 3] -> [N, 3, S, S] in [-1, 1] (preprocessor mean 0.5 / std 0.5, as the checkpoint says)."""
    return torch.from_numpy(rgb).permute(0, 3, 1, 2).float().div(127.5).sub(1.0)


def quantise(vq: VQModel, pixels: torch.Tensor):
    """-> (unit latents z [B, D, h, w], unit codes z_q of the same shape, ids [B, h*w])."""
    z = F.normalize(vq.quant_conv(vq.encoder(pixels)), dim=1)
    b, d, h, w = z.shape
    flat = z.permute(0, 2, 3, 1).reshape(-1, d)
    codebook = F.normalize(vq.quantize.embedding.weight, dim=1)
    ids = (flat @ codebook.t()).argmax(dim=1)  # nearest unit vector = largest cosine
    z_q = codebook[ids].view(b, h, w, d).permute(0, 3, 1, 2)
    return z, z_q, ids.view(b, -1)


def train_vq(arch: VQArch, grid: int, cfg: VQTrainConfig, log=print) -> tuple[VQModel, dict]:
    torch.manual_seed(cfg.seed)
    vq = VQModel(arch, grid=grid)
    data = to_pixels(world_images(cfg.num_images, cfg.seed, cfg.image_size))
    opt = torch.optim.Adam(vq.parameters(), lr=cfg.lr, betas=(0.9, 0.99))
    gen = torch.Generator().manual_seed(cfg.seed)
    usage = torch.zeros(arch.num_embeddings)
    start = time.perf_counter()
    stats = {}
    for step in range(1, cfg.steps + 1):
        lr = cfg.lr * min(1.0, step / 50) * (0.1 + 0.9 * 0.5 * (1 + np.cos(np.pi * step / cfg.steps)))
        for group in opt.param_groups:
            group["lr"] = lr
        batch = data[torch.randint(0, len(data), (cfg.batch_size,), generator=gen)]
        if step <= (1 - cfg.full_fraction) * cfg.steps and cfg.crop < cfg.image_size:
            # crops start on the 8-pixel token grid so that they see patches as the whole image does
            y, x = (int(v) * 8 for v in torch.randint(0, (cfg.image_size - cfg.crop) // 8 + 1, (2,), generator=gen))
            batch = batch[:, :, y : y + cfg.crop, x : x + cfg.crop]
        else:  # whole images cost (image_size / crop)^2 as much: keep the pixels per step the same
            batch = batch[: max(1, cfg.batch_size * cfg.crop**2 // cfg.image_size**2)]
        z, z_q, ids = quantise(vq, batch)
        z_st = z + (z_q - z).detach()
        recon = vq.decoder(vq.post_quant_conv(z_st))
        rec = F.mse_loss(recon, batch) + 0.5 * F.l1_loss(recon, batch)
        vq_loss = F.mse_loss(z_q, z.detach()) + cfg.commitment * F.mse_loss(z, z_q.detach())
        loss = rec + vq_loss
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        usage += torch.bincount(ids.flatten(), minlength=arch.num_embeddings)
        if cfg.reseed_every and step % cfg.reseed_every == 0 and step < 0.8 * cfg.steps:
            dead = (usage == 0).nonzero().flatten()
            if len(dead):
                with torch.no_grad():  # the worst-quantised latents of this batch become the dead codes
                    flat = z.detach().permute(0, 2, 3, 1).reshape(-1, z.shape[1])
                    err = (flat - z_q.detach().permute(0, 2, 3, 1).reshape(-1, z.shape[1])).pow(2).sum(1)
                    worst = err.argsort(descending=True)[: len(dead)]
                    vq.quantize.embedding.weight[dead[: len(worst)]] = flat[worst]
            stats["dead_codes"] = int(len(dead))
            usage.zero_()
        if step % 25 == 0 or step == cfg.steps:
            log(f"vq step {step}/{cfg.steps} rec {rec.item():.4f} vq {vq_loss.item():.4f} "
                f"dead {stats.get('dead_codes')} ({time.perf_counter() - start:.0f}s)")
    stats.update(elapsed_s=time.perf_counter() - start, final_rec=rec.item())
    return vq.eval(), stats
