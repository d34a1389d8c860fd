"""The training view of BAGEL: one ``forward(batch)`` from packed sequences (bagel_data) to the summed loss terms
[CE over text targets, flow-matching MSE over target latent tokens] (facts: the official ``Bagel.forward``).

The noisy latent of a target token at flow time t is ``x_t = (1 - t) x0 + t noise`` and the target velocity is
``noise - x0``; the per-token MSE is the mean over the latent channels. The frozen VAE is not part of this module
(it encodes images in the data pipeline and is copied unchanged into exports). Every rank calls every trainable
module on every micro-batch (dummy ViT / latent inputs with zero weight, both MoT experts even on zero rows), so
FSDP2's and ZeRO-3's collectives stay matched.
"""
from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from unicorn.cpr.schema import KINDS
from unicorn.models.bagel import BagelModel
from unicorn.models.bagel_flow import noisy_latents
from unicorn.training.bagel_data import PAD, TEXT, VAE_CLEAN, VAE_NOISY, VIT
from unicorn.training.data import IGNORE
from unicorn.training.loss import linear_cross_entropy, per_kind_sums

LOSS_TERMS = ("ce", "mse")
# The same sums split by CPR kind: logged, weighted 0 (the loss is the two terms above, as the official one).
TERMS = LOSS_TERMS + tuple(f"ce/{k}" for k in KINDS) + tuple(f"mse/{k}" for k in KINDS)


def bagel_attention_mask(segment: torch.Tensor, block: torch.Tensor, noisy: torch.Tensor) -> torch.Tensor:
    """[B, L] each -> bool [B, 1, L, L]: within a segment, causal, plus bidirectional inside an image block; a noisy
    (target) block is seen by no other block; padding sees only itself."""
    length = segment.shape[1]
    causal = torch.ones(length, length, dtype=torch.bool, device=segment.device).tril()
    same = (segment[:, :, None] == segment[:, None, :]) & (segment[:, None, :] > 0)
    same_block = (block[:, :, None] == block[:, None, :]) & (block[:, :, None] >= 0)
    hidden_noise = noisy[:, None, :] & ~same_block
    eye = torch.eye(length, dtype=torch.bool, device=segment.device)
    return ((same & (causal | same_block) & ~hidden_noise) | eye)[:, None]


class BagelTrainingModel(nn.Module):
    supports_compile = False  # the MoT layers take closures (routing, attention); not tried under torch.compile

    def __init__(self, bagel: BagelModel, use_liger: bool = True):
        super().__init__()
        if "vae" in bagel._modules:
            del bagel.vae  # frozen: lives in the data pipeline, never in the optimizer or its shards
        self.bagel = bagel
        self.use_liger = use_liger

    # ---- what parallelize.py applies to ----------------------------------------------------------------
    def freeze(self, freeze_vision: bool) -> None:
        if freeze_vision:
            self.bagel.vit_model.requires_grad_(False)

    def layer_methods(self) -> list[tuple[nn.Module, str]]:
        """Decoder layers and the method the forward calls on them (activation checkpointing, compile)."""
        return [(layer, "forward") for layer in self.bagel.language_model.model.layers]

    def shard_units(self) -> list[tuple[nn.Module, str]]:
        """Modules FSDP2 shards one by one before the root (with the method the forward calls on them)."""
        vit = [(layer, "forward") for layer in self.bagel.vit_model.vision_model.encoder.layers]
        return vit + self.layer_methods()

    def prepare_zero3(self, deepspeed) -> None:
        self.use_liger = False  # ZeRO-3 gathers a module's weights only when it is called

    # ---- forward -------------------------------------------------------------------------------------------
    def _attend(self, mask: torch.Tensor, batch_size: int):
        def attend(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor) -> torch.Tensor:
            # q [B*L, Hq, D] -> [B, Hq, L, D]
            qb, kb, vb = (x.view(batch_size, -1, x.shape[1], x.shape[2]).transpose(1, 2) for x in (q, k, v))
            out = F.scaled_dot_product_attention(qb, kb, vb, attn_mask=mask, enable_gqa=qb.shape[1] != kb.shape[1])
            return out.transpose(1, 2).reshape(q.shape)

        return lambda _layer, q, k, v: attend(q, k, v)

    def embed(self, batch: dict[str, torch.Tensor]) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """(input embeddings [B*L, H], velocity targets of the target latent tokens [M, C], a zero-valued scalar
        that touches the modules a batch may not use)."""
        bagel = self.bagel
        source = batch["source"].reshape(-1)
        ids = torch.where(source == TEXT, batch["input_ids"].reshape(-1), torch.zeros_like(source))
        embeds = bagel.embed_text(ids)
        touch = embeds.new_zeros(())

        vit_at = (source == VIT).nonzero().squeeze(1)
        lens = batch["vit_lens"].tolist()
        if lens:
            feats = bagel.embed_vit_patches(batch["vit_patches"], batch["vit_positions"], lens)
            embeds = embeds.index_put((vit_at,), feats.to(embeds.dtype))
        else:
            patch = bagel.arch.vit.patch_size
            dummy = embeds.new_zeros(1, 3 * patch * patch)
            feats = bagel.embed_vit_patches(dummy, torch.zeros(1, dtype=torch.long, device=embeds.device), [1])
            touch = touch + 0.0 * feats.sum()

        x0, t = batch["latents"], batch["timesteps"]
        if x0.shape[0]:
            x_t, target = noisy_latents(x0, batch["noise"], t)
            lat_at = ((source == VAE_CLEAN) | (source == VAE_NOISY)).nonzero().squeeze(1)
            lat = bagel.embed_latents(x_t, t, batch["latent_positions"])
            embeds = embeds.index_put((lat_at,), lat.to(embeds.dtype))
            target = target[source[lat_at] == VAE_NOISY]
        else:
            dummy = embeds.new_zeros(1, bagel.arch.patch_latent_dim)
            zero = torch.zeros(1, dtype=torch.long, device=embeds.device)
            touch = touch + 0.0 * bagel.embed_latents(dummy, dummy[:, 0], zero).sum()
            target = embeds.new_zeros(0, bagel.arch.patch_latent_dim)
        return embeds, target, touch

    def forward(self, batch: dict[str, torch.Tensor]) -> torch.Tensor:
        """-> [sum of CE over text targets, sum of per-token MSE over target latent tokens, then both per CPR
        kind] (TERMS), fp32."""
        bagel = self.bagel
        b, length = batch["source"].shape
        source = batch["source"].reshape(-1)
        embeds, target, touch = self.embed(batch)
        mask = bagel_attention_mask(batch["segment"], batch["block"], batch["source"] == VAE_NOISY)
        gen_rows = ((source == VAE_CLEAN) | (source == VAE_NOISY)).nonzero().squeeze(1)
        positions = torch.where(source == PAD, torch.zeros_like(source), batch["positions"].reshape(-1))
        hidden = bagel.forward_with(embeds, positions, self._attend(mask, b), gen_rows, both_experts=True)

        labels, kinds = batch["text_labels"].reshape(-1), batch["label_kind"].reshape(-1)
        text_at = labels != IGNORE
        ce = linear_cross_entropy(hidden[text_at], bagel.language_model.lm_head, labels[text_at], self.use_liger)
        noisy_at = source == VAE_NOISY
        pred = bagel.velocity(hidden[noisy_at]).float()  # called on every micro-batch, even on 0 rows
        mse = (pred - target.float()).pow(2).mean(dim=-1)
        per_kind = (per_kind_sums(ce, kinds[text_at], len(KINDS)), per_kind_sums(mse, kinds[noisy_at], len(KINDS)))
        return torch.cat((torch.stack((ce.sum(), mse.sum())), *per_kind)) + touch.float()
