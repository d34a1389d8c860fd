"""FLUX autoencoder of BAGEL (16 latent channels, downsample 8); module names follow ``ae.safetensors``.

Blocks are the VQ-16 ones (same GroupNorm(32) ResNet / attention / resampling math); the FLUX layout differs in
having no attention in the resolution levels, a mean+log-variance encoder head, and ``decoder.up[i]`` indexed by
resolution level (``up[0]`` is the full resolution).
"""
from __future__ import annotations

import torch
from torch import nn

from unicorn.models.bagel_config import VAEArch
from unicorn.models.vq import Downsample, MidBlock, ResnetBlock, Upsample, _group_norm, _swish


class _Level(nn.Module):
    def __init__(self):
        super().__init__()
        self.block = nn.ModuleList()
        self.attn = nn.ModuleList()  # empty in FLUX; kept so the module tree matches the checkpoint's


class FluxEncoder(nn.Module):
    def __init__(self, arch: VAEArch):
        super().__init__()
        ch, mult = arch.ch, arch.ch_mult
        self.conv_in = nn.Conv2d(arch.in_channels, ch, 3, 1, 1)
        in_mult = (1,) + tuple(mult)
        self.down = nn.ModuleList()
        block_in = ch
        for level, m in enumerate(mult):
            down = _Level()
            block_in = ch * in_mult[level]
            for _ in range(arch.num_res_blocks):
                down.block.append(ResnetBlock(block_in, ch * m))
                block_in = ch * m
            if level != len(mult) - 1:
                down.downsample = Downsample(block_in)
            self.down.append(down)
        self.mid = MidBlock(block_in)
        self.norm_out = _group_norm(block_in)
        self.conv_out = nn.Conv2d(block_in, 2 * arch.z_channels, 3, 1, 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h = self.conv_in(x)
        for down in self.down:
            for block in down.block:
                h = block(h)
            if hasattr(down, "downsample"):
                h = down.downsample(h)
        h = self.mid(h)
        return self.conv_out(_swish(self.norm_out(h)))


class FluxDecoder(nn.Module):
    def __init__(self, arch: VAEArch):
        super().__init__()
        ch, mult = arch.ch, arch.ch_mult
        block_in = ch * mult[-1]
        self.conv_in = nn.Conv2d(arch.z_channels, block_in, 3, 1, 1)
        self.mid = MidBlock(block_in)
        levels: list[_Level] = []
        for level in reversed(range(len(mult))):
            up = _Level()
            for _ in range(arch.num_res_blocks + 1):
                up.block.append(ResnetBlock(block_in, ch * mult[level]))
                block_in = ch * mult[level]
            if level != 0:
                up.upsample = Upsample(block_in)
            levels.insert(0, up)
        self.up = nn.ModuleList(levels)  # up[level]: level 0 is the output resolution
        self.norm_out = _group_norm(block_in)
        self.conv_out = nn.Conv2d(block_in, arch.out_ch, 3, 1, 1)

    def forward(self, z: torch.Tensor) -> torch.Tensor:
        h = self.mid(self.conv_in(z))
        for up in reversed(self.up):
            for block in up.block:
                h = block(h)
            if hasattr(up, "upsample"):
                h = up.upsample(h)
        return self.conv_out(_swish(self.norm_out(h)))


class FluxAutoEncoder(nn.Module):
    def __init__(self, arch: VAEArch):
        super().__init__()
        self.arch = arch
        self.encoder = FluxEncoder(arch)
        self.decoder = FluxDecoder(arch)

    def encode(self, pixels: torch.Tensor, noise: torch.Tensor | None = None) -> torch.Tensor:
        """pixels [B, 3, H, W] in [-1, 1] -> scaled latents [B, z, H/8, W/8].

        The official encoder samples the posterior (``mean + std * noise``); ``noise=None`` takes the mean."""
        mean, logvar = self.encoder(pixels.to(self.encoder.conv_in.weight.dtype)).chunk(2, dim=1)
        z = mean if noise is None else mean + torch.exp(0.5 * logvar) * noise
        return self.arch.scale_factor * (z - self.arch.shift_factor)

    def decode(self, latents: torch.Tensor) -> torch.Tensor:
        """Scaled latents [B, z, h, w] -> pixels [B, 3, 8h, 8w] (about [-1, 1])."""
        z = latents / self.arch.scale_factor + self.arch.shift_factor
        return self.decoder(z.to(self.decoder.conv_in.weight.dtype))
