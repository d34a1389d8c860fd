"""Trains Janus' VQ-16 image tokenizer (unicorn/models/vq.py) on toy-world renders, deterministically on CPU.

The quantiser matches ``VQModel.encode`` / ``decode``: encoder latents and codebook rows are both l2-normalised,
the nearest unit code is looked up and decoded. Training runs in two phases:
1. a plain autoencoder on the unit latents (no quantiser), so the encoder first learns a latent space in which
   colours and shape parts are apart;
2. the codebook starts as spherical k-means of those latents, then VQ-VAE training goes on (straight-through
   estimator, codebook + commitment terms), re-seeding codes unused for a while from the worst-quantised latents.
Started cold, the quantiser merged object colours into two or three codes (every shape came back orange or blue).
Object pixels get extra loss weight (shapes cover a few % of an image).
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
    steps: int = 5000
    batch_size: int = 16
    lr: float = 2e-3
    commitment: float = 0.25
    reseed_every: int = 100  # steps between re-seeding codes unused since the last time (0: never)
    seed: int = 0
    image_size: int = 64
    crop: int = 32  # train on aligned crops (4x cheaper; the codec is convolutional) ...
    full_fraction: float = 0.3  # ... then on whole images for this last fraction (GroupNorm sees whole-image statistics)
    foreground_weight: float = 9.0  # extra loss weight on object pixels: shapes cover a few % of an image
    autoencoder_fraction: float = 0.4  # of the steps before the quantiser is switched on (k-means initialised)
    kmeans_images: int = 512
    kmeans_iters: int = 20


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


def foreground_weights(pixels: torch.Tensor, extra: float) -> torch.Tensor:
    """[N, 3, S, S] -> [N, 1, S, S] loss weights: 1 + ``extra`` where a pixel differs from the top-left corner's colour
    (the background, or the sky of two-tone scenes). Without it the codec learns backgrounds and blurs the shapes away."""
    differs = (pixels - pixels[:, :, :1, :1]).abs().sum(1, keepdim=True) > 0.3
    return 1.0 + extra * differs.float()


def grid_rows(z: torch.Tensor) -> torch.Tensor:
    """[B, D, h, w] -> [B*h*w, D]: one row per latent position."""
    return z.permute(0, 2, 3, 1).reshape(-1, z.shape[1])


def quantise(vq: VQModel, pixels: torch.Tensor):
    """-> (unit latents z [B, D, h, w], unit codes z_q of the same shape, ids [B, h*w])."""
    z = unit_latents(vq, pixels)
    b, d, h, w = z.shape
    flat = grid_rows(z)
    codebook = F.normalize(vq.quantize.embedding.weight, dim=1)
    ids = (flat @ codebook.t()).argmax(dim=1)  # nearest unit vector = largest cosine
    z_q = codebook[ids].view(b, h, w, d).permute(0, 3, 1, 2)
    return z, z_q, ids.view(b, -1)


def unit_latents(vq: VQModel, pixels: torch.Tensor) -> torch.Tensor:
    return F.normalize(vq.quant_conv(vq.encoder(pixels)), dim=1)


@torch.no_grad()
def spherical_kmeans(points: torch.Tensor, k: int, iters: int, gen: torch.Generator) -> torch.Tensor:
    """Unit points [N, D] -> k unit centroids (cosine k-means); an emptied cluster takes the worst-fitted point."""
    centroids = points[torch.randperm(len(points), generator=gen)[:k]].clone()
    for _ in range(iters):
        similarity = points @ centroids.t()
        best, assign = similarity.max(dim=1)
        sums = torch.zeros_like(centroids).index_add_(0, assign, points)
        counts = torch.bincount(assign, minlength=k)
        empty = (counts == 0).nonzero().flatten()
        centroids = F.normalize(sums, dim=1)
        if len(empty):
            centroids[empty] = points[best.argsort()[: len(empty)]]
    return centroids


def train_vq(arch: VQArch, grid: int, cfg: VQTrainConfig, log=print) -> tuple[VQModel, dict]:
    torch.manual_seed(cfg.seed)
    vq = VQModel(arch, grid=grid)
    data = to_pixels(world_images(cfg.num_images, cfg.seed, cfg.image_size))
    weights = foreground_weights(data, cfg.foreground_weight)
    opt = torch.optim.Adam(vq.parameters(), lr=cfg.lr, betas=(0.9, 0.99))
    gen = torch.Generator().manual_seed(cfg.seed)
    usage = torch.zeros(arch.num_embeddings)
    start = time.perf_counter()
    stats = {}
    quantise_from = int(cfg.autoencoder_fraction * cfg.steps) + 1
    for step in range(1, cfg.steps + 1):
        if step == quantise_from:
            with torch.no_grad():
                sample = data[torch.randperm(len(data), generator=gen)[: cfg.kmeans_images]]
                latents = torch.cat([unit_latents(vq, sample[i : i + 64]) for i in range(0, len(sample), 64)])
                points = grid_rows(latents)
                vq.quantize.embedding.weight.copy_(spherical_kmeans(points, arch.num_embeddings, cfg.kmeans_iters, gen))
            log(f"vq step {step}: quantiser on, codebook = k-means of {len(points)} latents")
        lr = cfg.lr * min(1.0, step / 50) * (0.1 + 0.9 * 0.5 * (1 + np.cos(np.pi * step / cfg.steps)))
        for group in opt.param_groups:
            group["lr"] = lr
        picked = torch.randint(0, len(data), (cfg.batch_size,), generator=gen)
        batch, weight = data[picked], weights[picked]
        if step <= (1 - cfg.full_fraction) * cfg.steps and cfg.crop < cfg.image_size:
            # crops start on the 8-pixel token grid so that they see patches as the whole image does
            y, x = (int(v) * 8 for v in torch.randint(0, (cfg.image_size - cfg.crop) // 8 + 1, (2,), generator=gen))
            batch, weight = (t[:, :, y : y + cfg.crop, x : x + cfg.crop] for t in (batch, weight))
        else:  # whole images cost (image_size / crop)^2 as much: keep the pixels per step the same
            keep = max(1, cfg.batch_size * cfg.crop**2 // cfg.image_size**2)
            batch, weight = batch[:keep], weight[:keep]
        quantising = step >= quantise_from
        if quantising:
            z, z_q, ids = quantise(vq, batch)
            z_st = z + (z_q - z).detach()
        else:
            z = z_st = unit_latents(vq, batch)
        recon = vq.decoder(vq.post_quant_conv(z_st))
        err = recon - batch
        rec = (weight * (err.square() + 0.5 * err.abs())).sum() / (weight.sum() * 3)
        vq_loss = (F.mse_loss(z_q, z.detach()) + cfg.commitment * F.mse_loss(z, z_q.detach())
                   if quantising else torch.zeros(()))
        loss = rec + vq_loss
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        if not quantising:
            if step % 25 == 0:
                log(f"vq step {step}/{cfg.steps} rec {rec.item():.4f} (autoencoder) ({time.perf_counter() - start:.0f}s)")
            continue
        usage += torch.bincount(ids.flatten(), minlength=arch.num_embeddings)
        if cfg.reseed_every and (step - quantise_from + 1) % cfg.reseed_every == 0 and step < 0.8 * cfg.steps:
            dead = (usage == 0).nonzero().flatten()
            if len(dead):
                with torch.no_grad():  # the worst-quantised latents of this batch become the dead codes
                    flat = grid_rows(z.detach())
                    err = (flat - grid_rows(z_q.detach())).pow(2).sum(1)
                    worst = err.argsort(descending=True)[: len(dead)]
                    vq.quantize.embedding.weight[dead[: len(worst)]] = flat[worst]
            stats["dead_codes"] = int(len(dead))
            usage.zero_()
        if step % 25 == 0 or step == cfg.steps:
            log(f"vq step {step}/{cfg.steps} rec {rec.item():.4f} vq {vq_loss.item():.4f} "
                f"dead {stats.get('dead_codes')} ({time.perf_counter() - start:.0f}s)")
    stats.update(elapsed_s=time.perf_counter() - start, final_rec=rec.item())
    return vq.eval(), stats
