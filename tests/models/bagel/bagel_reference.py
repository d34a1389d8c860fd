"""A plain reference of the official BAGEL inferencer, for equivalence tests (imports nothing of unicorn.models).

Written from the facts of ByteDance-Seed/Bagel (inferencer.py ``interleave_inference`` / ``gen_image`` /
``gen_text``; modeling/bagel/bagel.py ``prepare_*``, ``generate_image``, ``_forward_flow``, ``generate_text``;
qwen2_navit.py MoT layers; siglip_navit.py; autoencoder.py) as summarised in shared/engine-notes.md §1, step by
step and at batch 1, but with **full-context recompute**: a context is a list of token blocks, and every forward
runs the whole context again under the block mask the official KV cache implies (text causal, an image block
bidirectional inside, every block seeing all earlier ones) instead of reading a cache. CFG branches run one
after another. Weights are read straight from the checkpoint files, math in fp32 with plain tensor ops.
"""
from __future__ import annotations

import json
import math
import os
import re
from dataclasses import dataclass, field

import torch
import torch.nn.functional as F
from safetensors.torch import load_file
from tokenizers import Tokenizer


@dataclass
class Block:
    embeds: torch.Tensor  # [n, H]
    gen: torch.Tensor  # [n] bool: routed to the generation expert
    position: torch.Tensor  # [n] rope positions
    causal: bool


@dataclass
class Context:
    """The official gen_context: what is in the KV cache (here: the blocks themselves) and the next rope."""

    blocks: list[Block] = field(default_factory=list)
    rope: int = 0

    def deepcopy(self) -> "Context":
        return Context(list(self.blocks), self.rope)


def _gelu_tanh(x):
    return F.gelu(x, approximate="tanh")


class ReferenceBagel:
    def __init__(self, path: str):
        with open(os.path.join(path, "llm_config.json")) as f:
            llm = json.load(f)
        with open(os.path.join(path, "vit_config.json")) as f:
            vit = json.load(f)
        self.w = {k: v.float() for k, v in load_file(os.path.join(path, "ema.safetensors")).items()}
        self.w.update({"vae." + k: v.float() for k, v in load_file(os.path.join(path, "ae.safetensors")).items()})
        tok = Tokenizer.from_file(os.path.join(path, "tokenizer.json"))
        self.bos, self.eos = tok.token_to_id("<|im_start|>"), tok.token_to_id("<|im_end|>")
        self.soi, self.eoi = tok.token_to_id("<|vision_start|>"), tok.token_to_id("<|vision_end|>")
        self.heads, self.kv_heads = llm["num_attention_heads"], llm["num_key_value_heads"]
        self.head_dim = llm["hidden_size"] // self.heads
        self.eps, self.theta = llm["rms_norm_eps"], llm["rope_theta"]
        count = lambda pattern: 1 + max(int(m.group(1)) for k in self.w if (m := re.match(pattern, k)))  # noqa: E731
        self.layers = count(r"language_model\.model\.layers\.(\d+)\.")
        self.vit_layers = vit["num_hidden_layers"] - 1  # the official code drops one layer
        self.vit_heads, self.vit_patch = vit["num_attention_heads"], vit["patch_size"]
        self.vit_side = math.isqrt(self.w["vit_pos_embed.pos_embed"].shape[0])
        self.latent_side = math.isqrt(self.w["latent_pos_embed.pos_embed"].shape[0])
        self.vae_levels = count(r"vae\.encoder\.down\.(\d+)\.")
        self.vae_blocks = count(r"vae\.encoder\.down\.0\.block\.(\d+)\.")
        self.z = self.w["vae.decoder.conv_in.weight"].shape[1]
        self.latent_downsample = 2 ** (self.vae_levels - 1) * 2
        self.p = 2
        self.num_forwards = 0

    # ---- small ops --------------------------------------------------------------------------------------
    def lin(self, x, name, bias=True):
        b = self.w.get(name + ".bias") if bias else None
        return x @ self.w[name + ".weight"].T + (b if b is not None else 0)

    def rms(self, x, name):
        return self.w[name + ".weight"] * (x * torch.rsqrt(x.pow(2).mean(-1, keepdim=True) + self.eps))

    def rope(self, x, pos):
        inv = 1.0 / self.theta ** (torch.arange(0, self.head_dim, 2).float() / self.head_dim)
        f = pos.float()[:, None] * inv[None]
        cos, sin = torch.cat((f, f), -1).cos()[:, None], torch.cat((f, f), -1).sin()[:, None]
        half = self.head_dim // 2
        rot = torch.cat((-x[..., half:], x[..., :half]), -1)
        return x * cos + rot * sin

    # ---- the MoT language model over a whole sequence ----------------------------------------------------
    def run(self, blocks: list[Block]) -> torch.Tensor:
        """Hidden states after the final norm for every token of ``blocks`` (full recompute)."""
        self.num_forwards += 1
        x = torch.cat([b.embeds for b in blocks])
        gen = torch.cat([b.gen for b in blocks])
        pos = torch.cat([b.position for b in blocks])
        und = ~gen
        n = x.shape[0]
        allowed = torch.zeros(n, n, dtype=torch.bool)
        s = 0
        for b in blocks:
            e = s + b.embeds.shape[0]
            allowed[s:e, :s] = True
            allowed[s:e, s:e] = torch.ones(e - s, e - s, dtype=torch.bool).tril() if b.causal else True
            s = e

        def split(fn_und, fn_gen, inp, width):
            out = inp.new_zeros(inp.shape[0], width)
            out[und] = fn_und(inp[und])
            out[gen] = fn_gen(inp[gen])
            return out

        hd, H = self.head_dim, x.shape[1]
        for i in range(self.layers):
            p = f"language_model.model.layers.{i}."
            h = split(lambda y: self.rms(y, p + "input_layernorm"), lambda y: self.rms(y, p + "input_layernorm_moe_gen"), x, H)
            a = p + "self_attn."
            q = split(lambda y: self.lin(y, a + "q_proj"), lambda y: self.lin(y, a + "q_proj_moe_gen"), h, self.heads * hd)
            k = split(lambda y: self.lin(y, a + "k_proj"), lambda y: self.lin(y, a + "k_proj_moe_gen"), h, self.kv_heads * hd)
            v = split(lambda y: self.lin(y, a + "v_proj"), lambda y: self.lin(y, a + "v_proj_moe_gen"), h, self.kv_heads * hd)
            q, k, v = q.view(n, self.heads, hd), k.view(n, self.kv_heads, hd), v.view(n, self.kv_heads, hd)
            q2, k2 = torch.zeros_like(q), torch.zeros_like(k)
            q2[und], q2[gen] = self.rms(q[und], a + "q_norm"), self.rms(q[gen], a + "q_norm_moe_gen")
            k2[und], k2[gen] = self.rms(k[und], a + "k_norm"), self.rms(k[gen], a + "k_norm_moe_gen")
            q, k = self.rope(q2, pos), self.rope(k2, pos)
            rep = self.heads // self.kv_heads
            k, v = k.repeat_interleave(rep, 1), v.repeat_interleave(rep, 1)
            scores = torch.einsum("qhd,khd->hqk", q, k) / math.sqrt(hd)
            scores = scores.masked_fill(~allowed[None], float("-inf"))
            att = torch.einsum("hqk,khd->qhd", scores.softmax(-1), v).reshape(n, self.heads * hd)
            x = x + split(lambda y: self.lin(y, a + "o_proj", bias=False), lambda y: self.lin(y, a + "o_proj_moe_gen", bias=False), att, H)

            def mlp(y, suffix, ln):
                y = self.rms(y, p + ln + suffix)
                m = p + "mlp" + suffix + "."
                return self.lin(F.silu(self.lin(y, m + "gate_proj", False)) * self.lin(y, m + "up_proj", False), m + "down_proj", False)

            x = x + split(lambda y: mlp(y, "", "post_attention_layernorm"), lambda y: mlp(y, "_moe_gen", "post_attention_layernorm"), x, H)
        return split(lambda y: self.rms(y, "language_model.model.norm"), lambda y: self.rms(y, "language_model.model.norm_moe_gen"), x, H)

    def embed(self, ids: list[int]) -> torch.Tensor:
        return self.w["language_model.model.embed_tokens.weight"][torch.tensor(ids)]

    # ---- ViT -------------------------------------------------------------------------------------------------
    def _positions(self, h, w, patch, side):
        return (torch.arange(h // patch)[:, None] * side + torch.arange(w // patch)).flatten()

    def _patchify(self, img, p):
        c, h, w = img.shape
        return torch.einsum("chpwq->hwpqc", img.reshape(c, h // p, p, w // p, p)).reshape(-1, p * p * c)

    def vit(self, img: torch.Tensor) -> torch.Tensor:
        pos = self._positions(img.shape[1], img.shape[2], self.vit_patch, self.vit_side)
        pre = "vit_model.vision_model."
        x = self.lin(self._patchify(img, self.vit_patch), pre + "embeddings.patch_embedding")
        x = x + self.w[pre + "embeddings.position_embedding.weight"][pos]
        n, d = x.shape
        hd = d // self.vit_heads
        ln = lambda y, name: F.layer_norm(y, (d,), self.w[name + ".weight"], self.w[name + ".bias"], 1e-6)  # noqa: E731
        for i in range(self.vit_layers):
            L = f"{pre}encoder.layers.{i}."
            h = ln(x, L + "layer_norm1")
            q, k, v = (self.lin(h, L + f"self_attn.{t}_proj").view(n, self.vit_heads, hd) for t in "qkv")
            att = (torch.einsum("qhd,khd->hqk", q, k) / math.sqrt(hd)).softmax(-1)
            x = x + self.lin(torch.einsum("hqk,khd->qhd", att, v).reshape(n, d), L + "self_attn.out_proj")
            x = x + self.lin(_gelu_tanh(self.lin(ln(x, L + "layer_norm2"), L + "mlp.fc1")), L + "mlp.fc2")
        x = ln(x, pre + "post_layernorm")
        x = self.lin(_gelu_tanh(self.lin(x, "connector.fc1")), "connector.fc2")
        return x + self.w["vit_pos_embed.pos_embed"][pos]

    # ---- FLUX VAE ------------------------------------------------------------------------------------------
    def _gn(self, x, name):
        return F.group_norm(x, 32, self.w[name + ".weight"], self.w[name + ".bias"], 1e-6)

    def _conv(self, x, name, stride=1, padding=1):
        return F.conv2d(x, self.w[name + ".weight"], self.w[name + ".bias"], stride, padding)

    def _res(self, x, name):
        h = self._conv(F.silu(self._gn(x, name + ".norm1")), name + ".conv1")
        h = self._conv(F.silu(self._gn(h, name + ".norm2")), name + ".conv2")
        if name + ".nin_shortcut.weight" in self.w:
            x = self._conv(x, name + ".nin_shortcut", padding=0)
        return x + h

    def _attn(self, x, name):
        b, c, hh, ww = x.shape
        h = self._gn(x, name + ".norm")
        q, k, v = (self._conv(h, f"{name}.{t}", padding=0).reshape(b, c, -1).transpose(1, 2) for t in "qkv")
        o = ((q @ k.transpose(1, 2)) / math.sqrt(c)).softmax(-1) @ v
        return x + self._conv(o.transpose(1, 2).reshape(b, c, hh, ww), name + ".proj_out", padding=0)

    def _mid(self, x, name):
        return self._res(self._attn(self._res(x, name + ".block_1"), name + ".attn_1"), name + ".block_2")

    def vae_encode(self, img: torch.Tensor, noise: torch.Tensor | None = None) -> torch.Tensor:
        h = self._conv(img[None], "vae.encoder.conv_in")
        for lvl in range(self.vae_levels):
            for j in range(self.vae_blocks):
                h = self._res(h, f"vae.encoder.down.{lvl}.block.{j}")
            if lvl != self.vae_levels - 1:
                h = self._conv(F.pad(h, (0, 1, 0, 1)), f"vae.encoder.down.{lvl}.downsample.conv", stride=2, padding=0)
        h = self._mid(h, "vae.encoder.mid")
        h = self._conv(F.silu(self._gn(h, "vae.encoder.norm_out")), "vae.encoder.conv_out")
        mean, logvar = h.chunk(2, dim=1)
        z = mean if noise is None else mean + torch.exp(0.5 * logvar) * noise[None]
        return (0.3611 * (z - 0.1159))[0]

    def vae_decode(self, z: torch.Tensor) -> torch.Tensor:
        h = self._conv((z / 0.3611 + 0.1159)[None], "vae.decoder.conv_in")
        h = self._mid(h, "vae.decoder.mid")
        for lvl in reversed(range(self.vae_levels)):
            for j in range(self.vae_blocks + 1):
                h = self._res(h, f"vae.decoder.up.{lvl}.block.{j}")
            if lvl != 0:
                h = self._conv(F.interpolate(h, scale_factor=2.0, mode="nearest"), f"vae.decoder.up.{lvl}.upsample.conv")
        return self._conv(F.silu(self._gn(h, "vae.decoder.norm_out")), "vae.decoder.conv_out")[0]

    def latent_tokens(self, z: torch.Tensor) -> torch.Tensor:
        return self._patchify(z, self.p)

    def decode_image(self, latent: torch.Tensor, H: int, W: int) -> torch.Tensor:
        """inferencer.decode_image up to the uint8 cast: pixels [3, H, W] in [0, 255] (float)."""
        h, w = H // self.latent_downsample, W // self.latent_downsample
        z = torch.einsum("nhwpqc->nchpwq", latent.reshape(1, h, w, self.p, self.p, self.z))
        image = self.vae_decode(z.reshape(self.z, h * self.p, w * self.p))
        return (image * 0.5 + 0.5).clamp(0, 1) * 255

    def time_embed(self, t: torch.Tensor) -> torch.Tensor:
        half = 128
        freqs = torch.exp(-math.log(10000) * torch.arange(half).float() / half)
        args = t[:, None].float() * freqs[None]
        tf = torch.cat((torch.cos(args), torch.sin(args)), -1)
        return self.lin(F.silu(self.lin(tf, "time_embedder.mlp.0")), "time_embedder.mlp.2")

    def latent_embeds(self, x, t, H, W):
        pos = self._positions(H, W, self.latent_downsample, self.latent_side)
        return self.lin(x, "vae2llm") + self.time_embed(torch.full((x.shape[0],), float(t))) + self.w["latent_pos_embed.pos_embed"][pos]

    # ---- context updates (update_context_text / update_context_image) ---------------------------------------
    def update_text(self, ctx: Context, ids: list[int]) -> Context:
        ids = [self.bos, *ids, self.eos]
        block = Block(self.embed(ids), torch.zeros(len(ids), dtype=torch.bool), torch.arange(ctx.rope, ctx.rope + len(ids)), True)
        return Context(ctx.blocks + [block], ctx.rope + len(ids))

    def _image_block(self, ctx, body, gen):
        n = body.shape[0]
        embeds = torch.cat((self.embed([self.soi]), body, self.embed([self.eoi])))
        g = torch.zeros(n + 2, dtype=torch.bool)
        g[1:-1] = gen
        return Context(ctx.blocks + [Block(embeds, g, torch.full((n + 2,), ctx.rope), False)], ctx.rope + 1)

    def update_image(self, ctx: Context, img: torch.Tensor, vae=True, vit=True, vae_noise=None,
                     vit_img: torch.Tensor | None = None) -> Context:
        """``img`` as vae_transform gives it; ``vit_img`` as vit_transform then gives it (default: img)."""
        if vae:
            z = self.latent_tokens(self.vae_encode(img, vae_noise))
            body = self.latent_embeds(z, 0.0, img.shape[1], img.shape[2])
            ctx = self._image_block(ctx, body, True)
        if vit:
            ctx = self._image_block(ctx, self.vit(img if vit_img is None else vit_img), False)
        return ctx

    # ---- understanding (gen_text / generate_text, greedy) ---------------------------------------------------
    def gen_text(self, ctx: Context, max_length: int) -> list[int]:
        """Tokens after <|im_start|>, up to (not including) <|im_end|>."""
        ctx = ctx.deepcopy()
        current, out = self.bos, []
        for _ in range(max_length):
            block = Block(self.embed([current]), torch.zeros(1, dtype=torch.bool), torch.tensor([ctx.rope]), True)
            ctx = Context(ctx.blocks + [block], ctx.rope + 1)
            nxt = int(self.lin(self.run(ctx.blocks)[-1:], "language_model.lm_head", False).argmax(-1))
            if nxt == self.eos:
                break
            out.append(nxt)
            current = nxt
        return out

    # ---- generation (gen_image / generate_image / _forward_flow) ---------------------------------------------
    def _velocity(self, ctx: Context, x, t, H, W):
        n = x.shape[0]
        g = torch.zeros(n + 2, dtype=torch.bool)
        g[1:-1] = True
        embeds = torch.cat((self.embed([self.soi]), self.latent_embeds(x, t, H, W), self.embed([self.eoi])))
        query = Block(embeds, g, torch.full((n + 2,), ctx.rope), False)
        hidden = self.run(ctx.blocks + [query])[-(n + 2):]
        return self.lin(hidden, "llm2vae")[1:-1]

    def gen_image(self, shape, gen_ctx, cfg_text_ctx, cfg_img_ctx, noise, cfg_text_scale=4.0, cfg_img_scale=1.5,
                  cfg_interval=(0.4, 1.0), cfg_renorm_min=0.0, cfg_renorm_type="global", num_timesteps=50,
                  timestep_shift=3.0) -> torch.Tensor:
        H, W = shape
        x = noise.clone()
        ts = torch.linspace(1, 0, num_timesteps)
        ts = timestep_shift * ts / (1 + (timestep_shift - 1) * ts)
        dts = ts[:-1] - ts[1:]
        for i, t in enumerate(ts[:-1]):
            if t > cfg_interval[0] and t <= cfg_interval[1]:
                s_text, s_img = cfg_text_scale, cfg_img_scale
            else:
                s_text, s_img = 1.0, 1.0
            v = self._velocity(gen_ctx, x, t, H, W)
            if s_text > 1.0:
                v_text = self._velocity(cfg_text_ctx, x, t, H, W)
            if s_img > 1.0:
                v_img = self._velocity(cfg_img_ctx, x, t, H, W)
            if s_text > 1.0:
                if cfg_renorm_type == "text_channel":
                    vt = v_text + s_text * (v - v_text)
                    scale = (v.norm(dim=-1, keepdim=True) / (vt.norm(dim=-1, keepdim=True) + 1e-8)).clamp(min=cfg_renorm_min, max=1.0)
                    vt = vt * scale
                    v = v_img + s_img * (vt - v_img) if s_img > 1.0 else vt
                else:
                    vt = v_text + s_text * (v - v_text)
                    g = v_img + s_img * (vt - v_img) if s_img > 1.0 else vt
                    if cfg_renorm_type == "global":
                        nv, ng = v.norm(), g.norm()
                    else:
                        nv, ng = v.norm(dim=-1, keepdim=True), g.norm(dim=-1, keepdim=True)
                    v = g * (nv / (ng + 1e-8)).clamp(min=cfg_renorm_min, max=1.0)
            x = x - v * dts[i]
        return x

    def interleave_inference(self, inputs: list, noise: torch.Tensor | None = None, understanding_output=False,
                             max_think_token_n=1000, image_shapes=(1024, 1024), vae_noises=None, **gen_kwargs):
        """Text items are token id lists (already tokenized); images are normalized tensors [3, H, W] already at
        the transform's size, or (VAE-path image, ViT-path image) pairs. Returns the token ids (understanding) or
        the final latents (generation)."""
        gen_ctx = Context()
        cfg_text_ctx, cfg_img_ctx = gen_ctx.deepcopy(), gen_ctx.deepcopy()
        image_number = 0
        for item in inputs:
            if isinstance(item, list):
                cfg_text_ctx = gen_ctx.deepcopy()
                gen_ctx = self.update_text(gen_ctx, item)
                cfg_img_ctx = self.update_text(cfg_img_ctx, item)
            else:
                item, vit_item = item if isinstance(item, tuple) else (item, None)
                vae_noise = vae_noises[image_number] if vae_noises else None
                gen_ctx = self.update_image(gen_ctx, item, vae=not understanding_output, vae_noise=vae_noise,
                                            vit_img=vit_item)
                image_shapes = tuple(item.shape[1:])
                cfg_text_ctx = gen_ctx.deepcopy()
                image_number += 1
        if understanding_output:
            return self.gen_text(gen_ctx, max_think_token_n)
        return self.gen_image(image_shapes, gen_ctx, cfg_text_ctx, cfg_img_ctx, noise, **gen_kwargs)

