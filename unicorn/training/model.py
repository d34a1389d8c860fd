"""The training view of Janus: one ``forward(batch)`` from packed rows to summed CE per kind.

It holds the JanusModel without its VQ codec (frozen, used only by the data pipeline and copied unchanged into
exports), so FSDP2 / DeepSpeed wrap one module whose ``forward`` runs every trainable part: the root all-gather
covers embeddings, aligners and heads, and every rank calls every sharded block on every micro-batch (a rank with no
image in its batch runs the vision tower on a dummy image with zero weight), so collectives stay matched.
"""
from __future__ import annotations

import torch
from torch import nn

from unicorn.cpr.schema import KINDS
from unicorn.models.janus import JanusModel
from unicorn.training.data import GEN_CODE, IGNORE, UND_IMAGE
from unicorn.training.loss import linear_cross_entropy, per_kind_sums


def packed_causal_mask(segment: torch.Tensor) -> torch.Tensor:
    """segment [B, L] (0 = padding) -> bool [B, 1, L, L]: causal within a segment; padding sees only itself."""
    length = segment.shape[1]
    causal = torch.ones(length, length, dtype=torch.bool, device=segment.device).tril()
    same = (segment[:, :, None] == segment[:, None, :]) & (segment[:, None, :] > 0)
    eye = torch.eye(length, dtype=torch.bool, device=segment.device)
    return ((same & causal) | eye)[:, None]


class TrainingModel(nn.Module):
    def __init__(self, janus: JanusModel, use_liger: bool = True):
        super().__init__()
        if "vqmodel" in janus._modules:
            del janus.vqmodel  # frozen codec: lives in the data pipeline, never in the optimizer or its shards
        self.janus = janus
        self.use_liger = use_liger

    supports_compile = True

    @property
    def spec(self):
        return self.janus.spec

    # ---- what parallelize.py applies to ----------------------------------------------------------------
    def freeze(self, freeze_vision: bool) -> None:
        if freeze_vision:
            self.janus.vision_model.requires_grad_(False)

    def layer_methods(self) -> list[tuple[nn.Module, str]]:
        """Decoder layers and the method the forward calls on them (activation checkpointing, compile)."""
        return [(layer, "forward_dense") for layer in self.janus.language_model.layers]

    def shard_units(self) -> list[tuple[nn.Module, str]]:
        """Modules FSDP2 shards one by one before the root (with the method the forward calls on them)."""
        return [(layer, "forward") for layer in self.janus.vision_model.encoder.layers] + self.layer_methods()

    def prepare_zero3(self, deepspeed) -> None:
        """ZeRO-3 gathers a module's weights when the module is called: no fused CE (it reads head weights
        directly), and the one weight read outside its module's call is registered."""
        self.use_liger = False
        embeddings = self.janus.vision_model.embeddings
        deepspeed.zero.register_external_parameter(embeddings, embeddings.position_embedding.weight)

    def embed(self, batch: dict[str, torch.Tensor]) -> tuple[torch.Tensor, torch.Tensor]:
        """Input embeddings [B, L, H] and a zero-valued scalar that touches otherwise-unused trainable modules."""
        janus = self.janus
        ids, source = batch["input_ids"], batch["source"]
        text_ids = torch.where(source == GEN_CODE, torch.zeros_like(ids), ids)
        embeds = janus.embed_text(text_ids)
        gen = source == GEN_CODE
        gen_embeds = janus.embed_image_tokens(ids[gen] if gen.any() else ids.new_zeros(1))
        if gen.any():
            embeds = embeds.masked_scatter(gen[..., None], gen_embeds.to(embeds.dtype))
        touch = 0.0 * gen_embeds.sum()  # always part of the graph, so every rank's backward looks the same

        pixels = batch["pixel_values"]
        und = source == UND_IMAGE
        if pixels.shape[0]:
            features = janus.encode_images(pixels)  # [N, num_image_tokens, H]
            embeds = embeds.masked_scatter(und[..., None], features.reshape(-1, features.shape[-1]).to(embeds.dtype))
        else:
            size = janus.arch.vision.image_size
            dummy = torch.zeros(1, 3, size, size, device=embeds.device, dtype=embeds.dtype)
            touch = touch + 0.0 * janus.encode_images(dummy).sum()
        return embeds, touch

    def forward(self, batch: dict[str, torch.Tensor]) -> torch.Tensor:
        """-> CE summed per kind [K] fp32 (plus a zero that keeps unused trainable modules in the graph)."""
        janus = self.janus
        embeds, touch = self.embed(batch)
        hidden = janus.forward_dense(embeds, batch["positions"], packed_causal_mask(batch["segment"]))
        kinds = batch["label_kind"]
        sums = torch.zeros(len(KINDS), dtype=torch.float32, device=hidden.device)

        # Both heads run on every micro-batch, even on zero selected rows, so every rank calls the same modules in the
        # same order (ZeRO-3 checks this).
        text_at = batch["text_labels"] != IGNORE
        ce = linear_cross_entropy(hidden[text_at], janus.lm_head, batch["text_labels"][text_at], self.use_liger)
        sums = sums + per_kind_sums(ce, kinds[text_at], len(KINDS))

        image_at = batch["image_labels"] != IGNORE
        head = janus.generation_head
        inner = head.act(head.proj_out(hidden[image_at]))
        ce = linear_cross_entropy(inner, head.vision_head, batch["image_labels"][image_at], self.use_liger)
        sums = sums + per_kind_sums(ce, kinds[image_at], len(KINDS))
        return sums + touch.float()
