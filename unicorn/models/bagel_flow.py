"""BAGEL's rectified-flow sampling math: the shifted schedule, the CFG interval and the per-image CFG combine.

Facts (official ``Bagel.generate_image`` / ``_forward_flow``): t runs from 1 (noise) to 0 (data) on
``linspace(1, 0, num_timesteps)`` shifted by ``t' = s t / (1 + (s - 1) t)``; there are ``num_timesteps - 1``
steps ``x <- x - v dt``; CFG is applied when ``lo < t' <= hi``; image CFG only inside text CFG (a step with text
scale 1 uses the conditional velocity alone, whatever the image scale); renorm scales the guided velocity by
``clamp(|v| / |v'|, renorm_min, 1)``: ``global`` one norm per image (the official code takes it over the whole
packed batch, which is the same at batch 1), ``channel`` per token, ``text_channel`` per token on the text-CFG
result before the image CFG.
"""
from __future__ import annotations

from dataclasses import dataclass

import torch

RENORM_TYPES = ("global", "channel", "text_channel")


@dataclass(frozen=True)
class FlowParams:
    """One image's sampling settings (the official names and T2I defaults of ``InterleaveInferencer.gen_image``)."""

    num_timesteps: int = 50
    timestep_shift: float = 3.0
    cfg_text_scale: float = 4.0
    cfg_img_scale: float = 1.5
    cfg_interval: tuple[float, float] = (0.4, 1.0)
    cfg_renorm_min: float = 0.0
    cfg_renorm_type: str = "global"

    def __post_init__(self):
        if not isinstance(self.num_timesteps, int) or self.num_timesteps < 2:
            raise ValueError(f"num_timesteps must be an integer >= 2, got {self.num_timesteps!r}")
        if self.timestep_shift <= 0:
            raise ValueError(f"timestep_shift must be > 0, got {self.timestep_shift!r}")
        if self.cfg_renorm_type not in RENORM_TYPES:
            raise ValueError(f"cfg_renorm_type {self.cfg_renorm_type!r} is not one of {', '.join(RENORM_TYPES)}")
        lo, hi = self.cfg_interval
        if not lo <= hi:
            raise ValueError(f"cfg_interval {self.cfg_interval!r} must be (low, high) with low <= high")
        object.__setattr__(self, "cfg_interval", (float(lo), float(hi)))

    def schedule(self) -> tuple[torch.Tensor, torch.Tensor]:
        """(t' of each step [num_timesteps - 1], dt of each step), fp32."""
        t = torch.linspace(1, 0, self.num_timesteps)
        s = self.timestep_shift
        t = s * t / (1 + (s - 1) * t)
        return t[:-1], t[:-1] - t[1:]

    def scales_at(self, t: float) -> tuple[float, float]:
        """(text scale, image scale) in effect at time t (1.0 outside the CFG interval)."""
        lo, hi = self.cfg_interval
        if lo < t <= hi:
            return self.cfg_text_scale, self.cfg_img_scale
        return 1.0, 1.0


def _ratio(v: torch.Tensor, guided: torch.Tensor, per_token: bool, renorm_min: float) -> torch.Tensor:
    if per_token:
        num, den = v.norm(dim=-1, keepdim=True), guided.norm(dim=-1, keepdim=True)
    else:
        num, den = v.norm(), guided.norm()
    return (num / (den + 1e-8)).clamp(min=renorm_min, max=1.0)


def cfg_combine(v: torch.Tensor, v_text: torch.Tensor | None, v_img: torch.Tensor | None, text_scale: float,
                img_scale: float, renorm_min: float = 0.0, renorm_type: str = "global") -> torch.Tensor:
    """One image's guided velocity [N, C] from its conditional ``v``, text-unconditional ``v_text`` and
    image-unconditional ``v_img`` velocities (the latter two used only when their scale is > 1)."""
    if text_scale <= 1.0:
        return v
    guided_text = v_text + text_scale * (v - v_text)
    if renorm_type == "text_channel":
        guided_text = guided_text * _ratio(v, guided_text, True, renorm_min)
        return v_img + img_scale * (guided_text - v_img) if img_scale > 1.0 else guided_text
    guided = v_img + img_scale * (guided_text - v_img) if img_scale > 1.0 else guided_text
    return guided * _ratio(v, guided, renorm_type == "channel", renorm_min)


def shift_timestep(t: torch.Tensor, shift: float) -> torch.Tensor:
    """The timestep shift ``t' = s t / (1 + (s - 1) t)`` (sampling schedule and training draws alike)."""
    return shift * t / (1 + (shift - 1) * t)


def training_timestep(z: torch.Tensor, shift: float = 1.0) -> torch.Tensor:
    """The official training draw of a target image's flow time from a standard normal ``z``: ``sigmoid(z)``,
    then shifted (``timestep_shift`` 1.0 in the official trainer, which the UniCorn fine-tuning keeps)."""
    return shift_timestep(torch.sigmoid(z), shift)


def noisy_latents(x0: torch.Tensor, noise: torch.Tensor, t: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Rectified flow at times t [N] (1 = noise): ``x_t = (1 - t) x0 + t noise`` and its velocity target
    ``noise - x0`` (what ``velocity`` predicts)."""
    return (1 - t[:, None]) * x0 + t[:, None] * noise, noise - x0
