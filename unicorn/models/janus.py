"""Janus / Janus-Pro: SigLIP understanding encoder, VQ-16 image tokenizer, LLaMA LM and the image-generation head.

Math follows transformers' JanusForConditionalGeneration; submodule names follow its state dict without the
leading ``model.``, so the transformers layout loads with a prefix strip (see janus_checkpoint.py).
"""
from __future__ import annotations

import PIL.Image
import torch
from torch import nn

from unicorn.attention import AttentionMetadata, KVCache
from unicorn.models.janus_chat import JANUS_PROMPT_FORMAT
from unicorn.models.janus_config import JanusArch
from unicorn.models.janus_image import ImageProcessing, postprocess_images, preprocess_images
from unicorn.models.layers import Linear
from unicorn.models.llama import LlamaModel
from unicorn.models.siglip import GenerationHead, MLPAligner, VisionModel
from unicorn.models.spec import ModelSpec, SpecialTokenIds
from unicorn.models.vq import VQModel


class JanusModel(nn.Module):
    """The engine's view of Janus: embeddings in, hidden states out, heads and image codecs on the side."""

    prompt_format = JANUS_PROMPT_FORMAT  # the chat and image-generation templates (unicorn.models.spec.PromptFormat)
    # Submodules training never updates (the trainer drops the VQ codec; exports copy it from the source): a weight
    # update (unicorn.models.weight_update) may leave them out, and they keep their values.
    frozen_modules = ("vqmodel",)

    def __init__(
        self,
        arch: JanusArch,
        special_ids: SpecialTokenIds,
        image_processing: ImageProcessing | None = None,
        dtype: torch.dtype = torch.float32,
        model_type: str = "janus",
    ):
        super().__init__()
        self.arch = arch
        text, vision, vq = arch.text, arch.vision, arch.vq
        self.vision_model = VisionModel(vision)
        self.aligner = MLPAligner(vision.hidden_size, vision.projection_dim, vision.depth, vision.hidden_act)
        self.vqmodel = VQModel(vq, grid=arch.generation_grid)
        self.generation_embeddings = nn.Embedding(vq.num_embeddings, vq.embed_dim)
        self.generation_aligner = MLPAligner(vq.embed_dim, vq.projection_dim, vq.num_hidden_layers, vq.hidden_act)
        self.generation_head = GenerationHead(
            vq.image_token_embed_dim, vq.head_inner_dim, vq.num_embeddings, vq.hidden_act
        )
        self.language_model = LlamaModel(text)
        self.lm_head = Linear(text.hidden_size, text.vocab_size, bias=False)
        self.image_processing = image_processing or ImageProcessing(image_size=vision.image_size)
        self.spec = ModelSpec(
            model_type=model_type,
            num_layers=text.num_hidden_layers,
            num_heads=text.num_attention_heads,
            num_kv_heads=text.num_key_value_heads,
            head_dim=text.head_dim,
            hidden_size=text.hidden_size,
            text_vocab_size=text.vocab_size,
            image_vocab_size=vq.num_embeddings,
            max_position_embeddings=text.max_position_embeddings,
            num_image_tokens=vision.num_image_tokens,
            num_generated_image_tokens=arch.generation_grid**2,
            image_size=vision.image_size,
            dtype=dtype,
            **vars(special_ids),
        )

    def tie_lm_head(self) -> None:
        self.lm_head.weight = self.language_model.embed_tokens.weight

    # ---- inputs -------------------------------------------------------------------------------------------
    def embed_text(self, ids: torch.Tensor) -> torch.Tensor:
        """ids [T] -> [T, H]."""
        return self.language_model.embed_tokens(ids)

    def embed_image_tokens(self, ids: torch.Tensor) -> torch.Tensor:
        """VQ code ids [T] -> LM input embeddings [T, H] (generation_embeddings then generation_aligner)."""
        return self.generation_aligner(self.generation_embeddings(ids))

    def encode_images(self, pixel_values: torch.Tensor) -> torch.Tensor:
        """pixel_values [N, 3, S, S] -> understanding features [N, num_image_tokens, H]."""
        return self.aligner(self.vision_model(pixel_values))

    # ---- language model -----------------------------------------------------------------------------------
    def forward(
        self, inputs_embeds: torch.Tensor, positions: torch.Tensor, kv_caches: list[KVCache], meta: AttentionMetadata
    ) -> torch.Tensor:
        """Packed tokens [T, H] at explicit positions [T] over the paged caches -> hidden after final norm [T, H]."""
        return self.language_model(inputs_embeds, positions, kv_caches, meta)

    def forward_dense(
        self, inputs_embeds: torch.Tensor, positions: torch.Tensor, attention_mask: torch.Tensor | None = None
    ) -> torch.Tensor:
        """Cache-free causal forward for training: [B, L, H], positions [B, L], mask [B, L] (1 = token) -> [B, L, H]."""
        return self.language_model.forward_dense(inputs_embeds, positions, attention_mask)

    # ---- heads --------------------------------------------------------------------------------------------
    def text_logits(self, hidden: torch.Tensor) -> torch.Tensor:
        """[N, H] -> [N, text_vocab]."""
        return self.lm_head(hidden)

    def image_logits(self, hidden: torch.Tensor) -> torch.Tensor:
        """[N, H] -> [N, image_vocab] (generation_head)."""
        return self.generation_head(hidden)

    def image_head_features(self, hidden: torch.Tensor) -> torch.Tensor:
        """[N, H] -> [N, F], the input of the image head's last linear layer; ``image_head_logits`` maps them
        (affinely) to the logits, so a CFG mix of features gives the CFG mix of logits (see the engine's runner)."""
        return self.generation_head.features(hidden)

    def image_head_logits(self, features: torch.Tensor) -> torch.Tensor:
        """[N, F] -> [N, image_vocab]."""
        return self.generation_head.vision_head(features)

    # ---- image codec --------------------------------------------------------------------------------------
    def decode_image_tokens(self, ids: torch.Tensor) -> torch.Tensor:
        """VQ ids [B, num_generated_image_tokens] -> float pixels [B, 3, S, S] in the normalized space (about [-1, 1])."""
        return self.vqmodel.decode(ids)

    def encode_pixels_to_tokens(self, pixel_values: torch.Tensor, l2_normalized: bool = True) -> torch.Tensor:
        """pixel_values [B, 3, S, S] -> VQ ids [B, (S/16)^2]; see VectorQuantizer.nearest_codes for the flag."""
        return self.vqmodel.encode(pixel_values, l2_normalized)

    # ---- PIL <-> tensors ----------------------------------------------------------------------------------
    def preprocess_images(self, images: list[PIL.Image.Image | torch.Tensor]) -> torch.Tensor:
        """PIL images (as JanusImageProcessor) or float tensors [3, H, W] in the decoder's range (as
        :meth:`decode_image_tokens` gives, no uint8 rounding) -> pixel_values [N, 3, S, S] float32."""
        return preprocess_images(images, self.image_processing)

    def postprocess(self, pixel_values: torch.Tensor) -> list[PIL.Image.Image]:
        """Decoded pixels [B, 3, S, S] -> PIL images (as JanusImageProcessor.postprocess)."""
        return postprocess_images(pixel_values, self.image_processing)
