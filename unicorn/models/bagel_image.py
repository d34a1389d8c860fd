"""BAGEL's image preprocessing for its two input paths (the official ``ImageTransform``, facts in engine-notes §1.2).

An image is scaled so that its long edge is at most ``max_size`` and its short edge at least ``min_size`` (the
short-edge floor wins), both sides rounded to a multiple of ``stride`` (at least one stride), resized bilinearly,
then mapped to [-1, 1] (mean 0.5, std 0.5). The VAE path uses the latent position table's side x 16 px, the
checkpoint's VAE floor and stride 16; the ViT path the ViT position table's side x patch, its floor and the patch.
"""
from __future__ import annotations

import PIL.Image
import torch

from unicorn.models.bagel_config import BagelArch


def _fit(value: float, stride: int) -> int:
    return max(stride, int(round(value / stride)) * stride)


def resized_size(width: int, height: int, max_size: int, min_size: int, stride: int) -> tuple[int, int]:
    """(width, height) after the official resize rule."""
    scale = min(max_size / max(width, height), 1.0)
    scale = max(scale, min_size / min(width, height))
    w, h = _fit(round(width * scale), stride), _fit(round(height * scale), stride)
    if max(w, h) > max_size:  # the short-edge floor may push the long edge over
        scale = max_size / max(w, h)
        w, h = _fit(round(w * scale), stride), _fit(round(h * scale), stride)
    return w, h


def to_tensor(image: PIL.Image.Image, size: tuple[int, int]) -> torch.Tensor:
    """RGB image -> [3, H, W] float32 in [-1, 1] at ``size`` (width, height)."""
    if image.size != size:
        image = image.resize(size, PIL.Image.BILINEAR)
    data = torch.frombuffer(bytearray(image.tobytes()), dtype=torch.uint8).reshape(size[1], size[0], 3)
    return data.permute(2, 0, 1).float().div(255.0).sub(0.5).div(0.5)


def vae_size(arch: BagelArch, width: int, height: int) -> tuple[int, int]:
    return resized_size(width, height, arch.max_image_size, arch.vae_min_image_size, arch.latent_downsample)


def vit_size(arch: BagelArch, width: int, height: int) -> tuple[int, int]:
    patch = arch.vit.patch_size
    return resized_size(width, height, arch.vit_max_num_patch_per_side * patch, arch.vit_min_image_size, patch)
