"""Janus image pre/post-processing, matching transformers' JanusImageProcessor (PIL backend)."""
from __future__ import annotations

import json
import os
from dataclasses import dataclass

import numpy as np
import PIL.Image
import torch
import torch.nn.functional as F

OPENAI_CLIP_MEAN = (0.48145466, 0.4578275, 0.40821073)
OPENAI_CLIP_STD = (0.26862954, 0.26130258, 0.27577711)


@dataclass(frozen=True)
class ImageProcessing:
    image_size: int = 384
    image_mean: tuple[float, float, float] = OPENAI_CLIP_MEAN
    image_std: tuple[float, float, float] = OPENAI_CLIP_STD
    rescale_factor: float = 1 / 255
    min_size: int = 14
    do_normalize: bool = True
    resample: int = PIL.Image.Resampling.BICUBIC

    @property
    def background_color(self) -> tuple[int, ...]:
        return tuple(int(x * 255) for x in self.image_mean)

    @classmethod
    def from_checkpoint(cls, path: str, image_size: int) -> "ImageProcessing":
        """Reads preprocessor_config.json (transformers' or DeepSeek's keys) when present."""
        file = os.path.join(path, "preprocessor_config.json")
        if not os.path.exists(file):
            return cls(image_size=image_size)
        with open(file) as f:
            cfg = json.load(f)
        size = cfg.get("size") or {}
        size_value = size.get("height") if isinstance(size, dict) else size
        values = dict(image_size=int(size_value or cfg.get("image_size") or image_size))
        for key in ("image_mean", "image_std"):
            if cfg.get(key) is not None:
                v = cfg[key]
                values[key] = tuple(v) if isinstance(v, (list, tuple)) else (v, v, v)
        for key in ("rescale_factor", "min_size", "do_normalize", "resample"):
            if cfg.get(key) is not None:
                values[key] = cfg[key]
        return cls(**values)


def _resize_longest_side(image: PIL.Image.Image, p: ImageProcessing) -> PIL.Image.Image:
    width, height = image.size
    new_height, new_width = _longest_side_size(height, width, p)
    return image.resize((new_width, new_height), resample=p.resample, reducing_gap=None)


def _pad_to_square(pixels: np.ndarray, color: tuple[int, ...]) -> np.ndarray:
    # pixels: [C, H, W] uint8; centred on a square of the background colour
    channels, height, width = pixels.shape
    side = max(height, width)
    if height == width:
        return pixels
    out = np.empty((channels, side, side), dtype=pixels.dtype)
    out[:] = np.asarray(color, dtype=pixels.dtype)[:, None, None]
    if width > height:
        top = (side - height) // 2
        out[:, top : top + height, :] = pixels
    else:
        left = (side - width) // 2
        out[:, :, left : left + width] = pixels
    return out


def _longest_side_size(height: int, width: int, p: ImageProcessing) -> tuple[int, int]:
    scale = p.image_size / max(width, height)
    return max(round(height * scale), p.min_size), max(round(width * scale), p.min_size)


def _preprocess_tensor(pixels: torch.Tensor, p: ImageProcessing) -> torch.Tensor:
    """A float image [3, H, W] in the decoder's (normalized) space -> pixel_values [3, S, S] float32, the PIL
    path's steps without its uint8 rounding: unnormalize and clamp to the pixel range (as postprocess_images),
    resize the longest side (bicubic with antialiasing, torch's match of PIL's filter; only when the size
    differs), pad square with the background colour, normalize."""
    if not pixels.is_floating_point() or pixels.dim() != 3 or pixels.shape[0] != 3:
        raise ValueError(
            f"an image tensor must be float [3, H, W] in the decoder's range, got {str(pixels.dtype).split('.')[-1]} "
            f"{list(pixels.shape)}"
        )
    x = pixels.detach().to("cpu", torch.float32)
    mean = torch.tensor(p.image_mean, dtype=torch.float32)[:, None, None]
    std = torch.tensor(p.image_std, dtype=torch.float32)[:, None, None]
    top = 255 * p.rescale_factor
    if p.do_normalize:
        x = x * std + mean
    x = x.clamp(0, top)
    height, width = x.shape[1:]
    size = _longest_side_size(height, width, p)
    if size != (height, width):
        x = F.interpolate(x[None], size=size, mode="bicubic", antialias=True, align_corners=False)[0].clamp(0, top)
        height, width = size
    if height != width:
        side = max(height, width)
        background = torch.tensor(p.background_color, dtype=torch.float32)[:, None, None] * p.rescale_factor
        square = background.expand(3, side, side).clone()
        top_row, left = (side - height) // 2, (side - width) // 2
        square[:, top_row : top_row + height, left : left + width] = x
        x = square
    if p.do_normalize:
        x = (x - mean) / std
    return x.contiguous()


def preprocess_images(images: list[PIL.Image.Image | torch.Tensor], p: ImageProcessing) -> torch.Tensor:
    """PIL images or float tensors [3, H, W] in the decoder's range -> pixel_values [N, 3, S, S] float32: resize
    longest side, pad square, rescale, normalize (tensors skip the uint8 rounding; see _preprocess_tensor)."""
    out = []
    mean = np.asarray(p.image_mean, dtype=np.float32)[:, None, None]
    std = np.asarray(p.image_std, dtype=np.float32)[:, None, None]
    for image in images:
        if isinstance(image, torch.Tensor):
            out.append(_preprocess_tensor(image, p))
            continue
        image = _resize_longest_side(image.convert("RGB"), p)
        pixels = _pad_to_square(np.asarray(image).transpose(2, 0, 1), p.background_color)
        pixels = pixels.astype(np.float32) * np.float32(p.rescale_factor)
        if p.do_normalize:
            pixels = (pixels - mean) / std
        out.append(torch.from_numpy(np.ascontiguousarray(pixels)))
    return torch.stack(out)


def postprocess_images(pixel_values: torch.Tensor, p: ImageProcessing) -> list[PIL.Image.Image]:
    """Decoded pixels [B, 3, S, S] (normalized space) -> PIL images: unnormalize, rescale, clamp to uint8."""
    pixels = pixel_values.detach().float().cpu().numpy()
    if p.do_normalize:
        pixels = pixels * np.asarray(p.image_std)[None, :, None, None] + np.asarray(p.image_mean)[None, :, None, None]
    pixels = (pixels / p.rescale_factor).clip(0, 255).astype(np.uint8)  # truncation, as transformers
    return [PIL.Image.fromarray(np.ascontiguousarray(img.transpose(1, 2, 0))) for img in pixels]
