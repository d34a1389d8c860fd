"""BAGEL (ByteDance-Seed): a Qwen2-shaped Mixture-of-Transformers with a SigLIP NaViT encoder and a FLUX VAE.

Every decoder weight exists twice: the understanding expert (text and ViT tokens) and the generation expert
(``*_moe_gen``: VAE latent tokens, noisy or clean). Attention is one joint attention over all tokens. Tokens are
routed per row: the caller names the packed rows that use the generation expert (``gen_rows``); all others use
the understanding one. Positions are explicit and decoupled from cache slots: a whole image block (its two
markers and every image token) shares one rope position; the 2-D layout comes from additive position tables.

Submodule names follow the official state dict (``language_model.model.layers.{i}.self_attn.q_proj_moe_gen``,
``vit_model.vision_model.*``, ``connector``, ``time_embedder.mlp``, ...), with the FLUX VAE under ``vae.``.
"""
from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass

import PIL.Image
import torch
from torch import nn

from unicorn.attention import AttentionMetadata, KVCache, paged_attention
from unicorn.models.activations import get_activation
from unicorn.models.bagel_chat import BAGEL_PROMPT_FORMAT
from unicorn.models.bagel_config import TIMESTEP_FREQUENCY_DIM, BagelArch, LLMArch
from unicorn.models.bagel_vae import FluxAutoEncoder
from unicorn.models.bagel_vit import NaViT, flattened_positions, patchify
from unicorn.models.layers import FusedLinears, LlamaMLP, RMSNorm, RotaryEmbedding, apply_rope
from unicorn.models.spec import ModelSpec

# attend(layer_index, q [T, Hq, D], k [T, Hkv, D], v [T, Hkv, D]) -> [T, Hq, D]
AttendFn = Callable[[int, torch.Tensor, torch.Tensor, torch.Tensor], torch.Tensor]


@dataclass(frozen=True)
class BagelTokenIds:
    """The four Qwen2 special tokens BAGEL frames its segments with (``new_token_ids`` of the official code)."""

    im_start: int  # opens every text segment; also the first query of text generation
    im_end: int  # closes every text segment; ends text generation
    vision_start: int  # opens an image block
    vision_end: int  # closes an image block
    pad: int | None = None  # <|endoftext|>
    image_pad: int | None = None  # <|image_pad|>: the engine's placeholder of an image's tokens in a prompt


class Routing:
    """Which packed rows use which expert. ``gen_rows=None`` or empty: every row is understanding.

    Mixed rows are gathered with ``index_select`` and scattered with ``index_copy_`` (advanced indexing is several
    times slower on a CPU). Where few rows use one expert (the two markers of each image query block), the other
    expert runs on every row and the few rows are overwritten: a few wasted rows of GEMM instead of copying
    nearly the whole batch in and out of each expert (inference only: autograd keeps the plain split)."""

    MINORITY_FRACTION = 1 / 16  # below this share of rows, the other expert runs densely

    def __init__(self, num_rows: int, gen_rows: torch.Tensor | None, both_experts: bool = False):
        self.und: torch.Tensor | None = None
        self.gen: torch.Tensor | None = None
        if both_experts:  # call both experts even on zero rows (training: every rank runs the same modules)
            gen_rows = gen_rows if gen_rows is not None else torch.zeros(0, dtype=torch.long)
        if (gen_rows is None or gen_rows.numel() == 0) and not both_experts:
            self.kind = "und"
        elif gen_rows.numel() == num_rows and not both_experts:
            self.kind = "gen"
        else:
            self.kind = "mixed"
            mask = torch.zeros(num_rows, dtype=torch.bool, device=gen_rows.device)
            mask[gen_rows] = True
            self.gen = gen_rows
            self.und = (~mask).nonzero().squeeze(1)
            few = self.MINORITY_FRACTION * num_rows
            if not both_experts and not torch.is_grad_enabled():
                if self.und.numel() < few:
                    self.kind = "gen_patched"
                elif self.gen.numel() < few:
                    self.kind = "und_patched"

    def apply(self, x: torch.Tensor, und_fn, gen_fn) -> torch.Tensor:
        """Runs ``und_fn`` on understanding rows and ``gen_fn`` on generation rows of x [T, ...]; output rows in
        x's order."""
        if self.kind == "und":
            return und_fn(x)
        if self.kind == "gen":
            return gen_fn(x)
        if self.kind == "gen_patched":
            return gen_fn(x).index_copy_(0, self.und, und_fn(x.index_select(0, self.und)))
        if self.kind == "und_patched":
            return und_fn(x).index_copy_(0, self.gen, gen_fn(x.index_select(0, self.gen)))
        a = und_fn(x.index_select(0, self.und))
        b = gen_fn(x.index_select(0, self.gen))
        out = a.new_empty((x.shape[0],) + a.shape[1:])
        out.index_copy_(0, self.und, a)
        return out.index_copy_(0, self.gen, b)


class MoTAttention(nn.Module):
    def __init__(self, arch: LLMArch):
        super().__init__()
        h, d = arch.hidden_size, arch.head_dim
        self.num_heads, self.num_kv_heads, self.head_dim = arch.num_attention_heads, arch.num_key_value_heads, d
        self.scale = d**-0.5
        for suffix in ("", "_moe_gen"):
            setattr(self, "q_proj" + suffix, nn.Linear(h, self.num_heads * d, bias=True))
            setattr(self, "k_proj" + suffix, nn.Linear(h, self.num_kv_heads * d, bias=True))
            setattr(self, "v_proj" + suffix, nn.Linear(h, self.num_kv_heads * d, bias=True))
            setattr(self, "o_proj" + suffix, nn.Linear(self.num_heads * d, h, bias=False))
            setattr(self, "q_norm" + suffix, RMSNorm(d, arch.rms_norm_eps))
            setattr(self, "k_norm" + suffix, RMSNorm(d, arch.rms_norm_eps))
        # q/k/v of each expert in one GEMM in the engine's forward (inference mode, see FusedLinears)
        self.qkv = {suffix: FusedLinears(*(getattr(self, name + suffix) for name in ("q_proj", "k_proj", "v_proj")))
                    for suffix in ("", "_moe_gen")}

    def _qkv(self, x: torch.Tensor, suffix: str) -> torch.Tensor:
        # x: [T, H] -> [T, (Hq + 2 Hkv) D]: q and k normed per head, v as projected
        t = x.shape[0]
        if torch.is_grad_enabled():  # training: the norms' inputs stay as autograd saw them
            q = getattr(self, "q_proj" + suffix)(x).view(t, self.num_heads, self.head_dim)
            k = getattr(self, "k_proj" + suffix)(x).view(t, self.num_kv_heads, self.head_dim)
            v = getattr(self, "v_proj" + suffix)(x)
            q = getattr(self, "q_norm" + suffix)(q)
            k = getattr(self, "k_norm" + suffix)(k)
            return torch.cat((q.flatten(1), k.flatten(1), v), dim=1)
        nq, nk = self.num_heads * self.head_dim, self.num_kv_heads * self.head_dim
        qkv = self.qkv[suffix].packed(x)  # the norms write their results back in place
        q_norm, k_norm = getattr(self, "q_norm" + suffix), getattr(self, "k_norm" + suffix)
        if qkv.device.type == "cpu" and qkv.dtype == torch.float32 and q_norm.eps == k_norm.eps:
            # both norms at once over the q and k heads, in place: RMSNorm's products in fp32, same bits
            heads = qkv[:, : nq + nk].view(t, self.num_heads + self.num_kv_heads, self.head_dim)
            weight = torch.cat((q_norm.weight.expand(self.num_heads, -1), k_norm.weight.expand(self.num_kv_heads, -1)))
            heads.mul_(torch.rsqrt(heads.pow(2).mean(-1, keepdim=True) + q_norm.eps)).mul_(weight)
            return qkv
        q, k = qkv[:, :nq], qkv[:, nq : nq + nk]
        q.copy_(q_norm(q.view(t, self.num_heads, self.head_dim)).flatten(1))
        k.copy_(k_norm(k.view(t, self.num_kv_heads, self.head_dim)).flatten(1))
        return qkv

    def forward(self, x, cos, sin, routing: Routing, attend: Callable) -> torch.Tensor:
        # x: [T, H] (already normed per expert)
        t = x.shape[0]
        qkv = routing.apply(x, lambda y: self._qkv(y, ""), lambda y: self._qkv(y, "_moe_gen"))
        nq, nk = self.num_heads * self.head_dim, self.num_kv_heads * self.head_dim
        # q and k heads rotated in one pass (the same cos/sin per token)
        qk = apply_rope(qkv[:, : nq + nk].view(t, self.num_heads + self.num_kv_heads, self.head_dim), cos, sin)
        v = qkv[:, nq + nk :].reshape(t, self.num_kv_heads, self.head_dim)
        out = attend(qk[:, : self.num_heads], qk[:, self.num_heads :], v).reshape(t, nq)
        return routing.apply(out, self.o_proj, self.o_proj_moe_gen)


class MoTDecoderLayer(nn.Module):
    def __init__(self, arch: LLMArch):
        super().__init__()
        h = arch.hidden_size
        self.self_attn = MoTAttention(arch)
        self.mlp = LlamaMLP(h, arch.intermediate_size)
        self.mlp_moe_gen = LlamaMLP(h, arch.intermediate_size)
        self.input_layernorm = RMSNorm(h, arch.rms_norm_eps)
        self.input_layernorm_moe_gen = RMSNorm(h, arch.rms_norm_eps)
        self.post_attention_layernorm = RMSNorm(h, arch.rms_norm_eps)
        self.post_attention_layernorm_moe_gen = RMSNorm(h, arch.rms_norm_eps)

    def forward(self, x, cos, sin, routing: Routing, attend: Callable) -> torch.Tensor:
        normed = routing.apply(x, self.input_layernorm, self.input_layernorm_moe_gen)
        x = x + self.self_attn(normed, cos, sin, routing, attend)
        return x + routing.apply(
            x,
            lambda y: self.mlp.forward_fused(self.post_attention_layernorm(y)),
            lambda y: self.mlp_moe_gen.forward_fused(self.post_attention_layernorm_moe_gen(y)),
        )


class MoTModel(nn.Module):
    def __init__(self, arch: LLMArch):
        super().__init__()
        self.embed_tokens = nn.Embedding(arch.vocab_size, arch.hidden_size)
        self.layers = nn.ModuleList(MoTDecoderLayer(arch) for _ in range(arch.num_hidden_layers))
        self.norm = RMSNorm(arch.hidden_size, arch.rms_norm_eps)
        self.norm_moe_gen = RMSNorm(arch.hidden_size, arch.rms_norm_eps)
        self.rotary_emb = RotaryEmbedding(arch.head_dim, arch.rope_theta)


class MoTLanguageModel(nn.Module):
    """``language_model``: ``model`` (the MoT stack) and ``lm_head``."""

    def __init__(self, arch: LLMArch):
        super().__init__()
        self.model = MoTModel(arch)
        self.lm_head = nn.Linear(arch.hidden_size, arch.vocab_size, bias=False)


class Connector(nn.Module):
    def __init__(self, in_dim: int, out_dim: int, act: str):
        super().__init__()
        self.act = get_activation(act)
        self.fc1 = nn.Linear(in_dim, out_dim)
        self.fc2 = nn.Linear(out_dim, out_dim)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.fc2(self.act(self.fc1(x)))


class PositionTable(nn.Module):
    """A side x side table of additive embeddings (frozen 2-D sin-cos in the official training)."""

    def __init__(self, side: int, hidden: int):
        super().__init__()
        self.pos_embed = nn.Parameter(torch.zeros(side * side, hidden), requires_grad=False)

    def forward(self, position_ids: torch.Tensor) -> torch.Tensor:
        return self.pos_embed[position_ids]


def timestep_frequencies(t: torch.Tensor, dim: int = TIMESTEP_FREQUENCY_DIM, max_period: float = 10000.0) -> torch.Tensor:
    """DiT's sinusoid of t [N] -> [N, dim]: cos half first, then sin."""
    half = dim // 2
    freqs = torch.exp(-math.log(max_period) * torch.arange(half, dtype=torch.float32, device=t.device) / half)
    args = t.float()[:, None] * freqs[None]
    return torch.cat((torch.cos(args), torch.sin(args)), dim=-1)


class TimestepEmbedder(nn.Module):
    def __init__(self, hidden: int):
        super().__init__()
        self.mlp = nn.Sequential(nn.Linear(TIMESTEP_FREQUENCY_DIM, hidden), nn.SiLU(), nn.Linear(hidden, hidden))

    def forward(self, t: torch.Tensor) -> torch.Tensor:
        return self.mlp(timestep_frequencies(t).to(self.mlp[0].weight.dtype))


class BagelModel(nn.Module):
    """The engine's view of BAGEL: embeddings of each input kind in, hidden states out, heads and the VAE on the
    side. Routing (``gen_rows``) and positions are the caller's: see the module docstring."""

    frozen_modules = ("vae",)  # the official fine-tuning freezes the VAE only
    prompt_format = BAGEL_PROMPT_FORMAT  # the segments of interleave_inference (unicorn.models.bagel_chat)
    # An image in a prompt is <|vision_start|> placeholders <|vision_end|>: one bidirectional block at one position.
    image_block_margin = (1, 1)

    def __init__(self, arch: BagelArch, token_ids: BagelTokenIds, dtype: torch.dtype = torch.float32,
                 model_type: str = "bagel"):
        super().__init__()
        self.arch = arch
        self.token_ids = token_ids
        llm, hidden = arch.llm, arch.llm.hidden_size
        self.language_model = MoTLanguageModel(llm)
        self.vit_model = NaViT(arch.vit)
        self.connector = Connector(arch.vit.hidden_size, hidden, arch.connector_act)
        self.vit_pos_embed = PositionTable(arch.vit_max_num_patch_per_side, hidden)
        self.time_embedder = TimestepEmbedder(hidden)
        self.vae2llm = nn.Linear(arch.patch_latent_dim, hidden)
        self.llm2vae = nn.Linear(hidden, arch.patch_latent_dim)
        self.latent_pos_embed = PositionTable(arch.max_latent_size, hidden)
        self.vae = FluxAutoEncoder(arch.vae)
        from unicorn.models.bagel_generation import BagelFlowGeneration

        self.flow = BagelFlowGeneration(self)  # the engine's flow requests (not a submodule)
        self.spec = ModelSpec(
            model_type=model_type,
            num_layers=llm.num_hidden_layers,
            num_heads=llm.num_attention_heads,
            num_kv_heads=llm.num_key_value_heads,
            head_dim=llm.head_dim,
            hidden_size=hidden,
            text_vocab_size=llm.vocab_size,
            image_vocab_size=0,  # images are continuous latents, not codes
            max_position_embeddings=llm.max_position_embeddings,
            num_image_tokens=arch.max_latent_size**2,  # the most latent tokens of one generated image
            image_size=arch.max_image_size,
            bos_token_id=token_ids.im_start,
            eos_token_id=token_ids.im_end,
            pad_token_id=token_ids.pad,
            image_token_id=token_ids.image_pad,
            boi_token_id=token_ids.vision_start,
            eoi_token_id=token_ids.vision_end,
            dtype=dtype,
        )

    # ---- inputs -------------------------------------------------------------------------------------------
    def embed_text(self, ids: torch.Tensor) -> torch.Tensor:
        """ids [T] -> [T, H]."""
        return self.language_model.model.embed_tokens(ids)

    def vit_inputs(self, pixels: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """One normalized image [3, H, W] (sides multiples of the patch) -> (patches [n, p*p*3], position ids [n])."""
        vit = self.arch.vit
        positions = flattened_positions(pixels.shape[1], pixels.shape[2], vit.patch_size, self.arch.vit_max_num_patch_per_side)
        return patchify(pixels, vit.patch_size), positions.to(pixels.device)

    def encode_vit(self, images: list[torch.Tensor]) -> list[torch.Tensor]:
        """Normalized images [3, H_i, W_i] -> LM input embeddings of their ViT tokens, [n_i, H] each."""
        inputs = [self.vit_inputs(img) for img in images]
        patches = torch.cat([p for p, _ in inputs])
        positions = torch.cat([q for _, q in inputs])
        lens = [p.shape[0] for p, _ in inputs]
        return list(self.embed_vit_patches(patches, positions, lens).split(lens))

    def embed_vit_patches(self, patches: torch.Tensor, positions: torch.Tensor, lens: list[int]) -> torch.Tensor:
        """Patches of several images back to back [N, p*p*3], their position ids [N], patches per image ->
        LM input embeddings [N, H]."""
        return self.connector(self.vit_model(patches, positions, lens)) + self.vit_pos_embed(positions)

    def latent_positions(self, height: int, width: int) -> torch.Tensor:
        """Position ids of a height x width image's latent tokens (checks the resolution)."""
        self.arch.check_image_size(height, width)
        d = self.arch.latent_downsample
        return flattened_positions(height, width, d, self.arch.max_latent_size)

    def embed_latents(self, latents: torch.Tensor, timesteps: torch.Tensor, position_ids: torch.Tensor) -> torch.Tensor:
        """Patchified latents [N, p*p*z] at flow times [N] (0 = clean; [1]: one time for all) and latent positions
        [N] -> [N, H]."""
        x = self.vae2llm(latents.to(self.vae2llm.weight.dtype))
        return x + self.time_embedder(timesteps) + self.latent_pos_embed(position_ids)

    def encode_vae(self, pixels: torch.Tensor, noise: torch.Tensor | None = None) -> torch.Tensor:
        """One normalized image [3, H, W] -> its patchified latents [(H/16)*(W/16), p*p*z] (posterior mean unless
        ``noise`` [z, H/8, W/8] is given, as the official encoder samples)."""
        z = self.vae.encode(pixels[None], None if noise is None else noise[None])[0]
        return patchify(z, self.arch.latent_patch_size)

    def decode_latents(self, latents: torch.Tensor, height: int, width: int) -> torch.Tensor:
        """Patchified latents [h*w, p*p*z] of one image -> pixels [3, H, W] (about [-1, 1])."""
        p, z = self.arch.latent_patch_size, self.arch.vae.z_channels
        h, w = height // self.arch.latent_downsample, width // self.arch.latent_downsample
        grid = latents.reshape(h, w, p, p, z).permute(4, 0, 2, 1, 3).reshape(1, z, h * p, w * p)
        return self.vae.decode(grid)[0]

    # ---- the engine's image inputs (understanding: ViT tokens) ----------------------------------------------
    def preprocess_images(self, images: list) -> list[torch.Tensor]:
        """Images for the ViT path, as float32 [3, H, W] in about [-1, 1]: a PIL image goes through the official
        ViT transform (resized by the official rule, unicorn.models.bagel_image.vit_size, then normalized); a
        normalized float tensor is taken as given, so its sides must be multiples of the ViT patch and at most
        the position table."""
        from unicorn.models.bagel_image import to_tensor, vit_size

        vit = self.arch.vit
        limit = self.arch.vit_max_num_patch_per_side * vit.patch_size
        out = []
        for k, image in enumerate(images):
            if isinstance(image, PIL.Image.Image):
                rgb = image.convert("RGB")
                out.append(to_tensor(rgb, vit_size(self.arch, *rgb.size)))
                continue
            if not isinstance(image, torch.Tensor):
                raise ValueError(f"BAGEL image {k}: give a PIL image or a normalized float tensor [3, H, W], got "
                                 f"{type(image).__name__}")
            if image.dim() != 3 or image.shape[0] != 3 or not image.is_floating_point():
                raise ValueError(f"BAGEL image {k}: expected a float tensor [3, H, W], got {tuple(image.shape)} "
                                 f"{image.dtype}")
            h, w = image.shape[1:]
            if h % vit.patch_size or w % vit.patch_size or max(h, w) > limit:
                raise ValueError(f"BAGEL image {k}: {h}x{w} px; the ViT path needs sides that are multiples of "
                                 f"{vit.patch_size} and at most {limit} px")
            out.append(image.detach().float())
        return out

    # The image encoders a prompt's image block may use: "vit" (understanding expert, the default) and "vae"
    # (clean latents at t = 0 on the generation expert: the context images of image-conditioned generation).
    generation_encoders = ("vae",)

    def image_token_count(self, pixel_values: torch.Tensor, encoder: str = "vit") -> int:
        """Tokens of one preprocessed image [3, H, W] (the markers of its block not counted)."""
        p = self.arch.latent_downsample if encoder == "vae" else self.arch.vit.patch_size
        return (pixel_values.shape[1] // p) * (pixel_values.shape[2] // p)

    def encode_images(self, pixel_values: torch.Tensor, encoder: str = "vit") -> torch.Tensor:
        """[N, 3, H, W] (one size) -> the LM inputs of their ViT tokens, or with ``encoder="vae"`` of their clean
        VAE latents (posterior mean, t = 0), [N, n, H]."""
        if encoder == "vae":
            height, width = pixel_values.shape[2:]
            pos = self.latent_positions(height, width).to(pixel_values.device)
            out = []
            for img in pixel_values:
                latents = self.encode_vae(img)
                out.append(self.embed_latents(latents, torch.zeros(latents.shape[0], device=img.device), pos))
            return torch.stack(out)
        return torch.stack(self.encode_vit(list(pixel_values)))

    @staticmethod
    def postprocess(pixel_values: torch.Tensor) -> list:
        """Decoded pixels [N, 3, H, W] (about [-1, 1]) -> PIL images (the official decode_image's rounding)."""
        import PIL.Image

        images = ((pixel_values.float() * 0.5 + 0.5).clamp(0, 1) * 255).to(torch.uint8)
        return [PIL.Image.fromarray(img.permute(1, 2, 0).cpu().numpy()) for img in images]

    # ---- language model -----------------------------------------------------------------------------------
    def forward_with(self, inputs_embeds: torch.Tensor, positions: torch.Tensor, attend: AttendFn,
                     gen_rows: torch.Tensor | None = None, both_experts: bool = False) -> torch.Tensor:
        """Packed tokens [T, H] at rope positions [T] -> hidden after the per-expert final norm [T, H]; ``attend``
        does each layer's attention (a paged cache, a dense mask, ...). ``both_experts`` calls every expert
        module even when no row uses it (distributed training needs the same calls on every rank)."""
        lm = self.language_model.model
        cos, sin = lm.rotary_emb(positions, inputs_embeds.dtype)
        routing = Routing(inputs_embeds.shape[0], gen_rows, both_experts)
        x = inputs_embeds
        for i, layer in enumerate(lm.layers):
            x = layer(x, cos, sin, routing, lambda q, k, v, i=i: attend(i, q, k, v))
        return routing.apply(x, lm.norm, lm.norm_moe_gen)

    def forward(self, inputs_embeds: torch.Tensor, positions: torch.Tensor, kv_caches: list[KVCache],
                meta: AttentionMetadata, gen_rows: torch.Tensor | None = None) -> torch.Tensor:
        """The paged forward: every new token's K/V is written to its slot in ``meta.slot_mapping``."""
        scale = self.arch.llm.head_dim**-0.5
        return self.forward_with(
            inputs_embeds, positions, lambda i, q, k, v: paged_attention(q, k, v, kv_caches[i], meta, scale), gen_rows
        )

    # ---- heads --------------------------------------------------------------------------------------------
    def text_logits(self, hidden: torch.Tensor) -> torch.Tensor:
        """[N, H] -> [N, vocab]."""
        return self.language_model.lm_head(hidden)

    def velocity(self, hidden: torch.Tensor) -> torch.Tensor:
        """[N, H] of latent tokens -> predicted flow velocity (noise - data) [N, p*p*z]."""
        return self.llm2vae(hidden)
