"""Random-weight BAGEL models in the official directory layout, for tests, and full-size ones for benchmarks.

    python -m unicorn.models.bagel_tiny /tmp/bagel-tiny            # writes the "tiny" preset
    write_random_bagel_checkpoint("/tmp/bagel-tiny", preset="tiny", seed=0)
    model = build_random_bagel("bagel-7b-mot", device="cuda", dtype=torch.bfloat16)   # no files

The directory holds what the official one does: llm_config.json (Qwen2), vit_config.json (SigLIP, with the
official quirk of one layer more than the weights hold), config.json (with the official stale
``max_latent_size``: the loader reads the size from the tensor), ema.safetensors, ae.safetensors and a small
byte-level BPE tokenizer in the Qwen2 files' format (tokenizer.json, vocab.json, merges.txt,
tokenizer_config.json) with Qwen2's special tokens after the merges.
"""
from __future__ import annotations

import argparse
import json
import math
import os

import torch

from unicorn.models.bagel import BagelModel, BagelTokenIds
from unicorn.models.bagel_config import BagelArch, LLMArch, VAEArch, ViTArch

PRESETS: dict[str, dict] = {
    # CPU tests: GQA, 2 layers, 56 px ViT position table, 64 px generation (4x4 latent tokens), VAE downsample 8.
    "tiny": dict(
        llm=dict(vocab_size=512, hidden_size=64, intermediate_size=128, num_hidden_layers=2, num_attention_heads=4,
                 num_key_value_heads=2, max_position_embeddings=2048, rope_theta=1e6),
        vit=dict(hidden_size=32, intermediate_size=64, num_hidden_layers=2, num_attention_heads=2, patch_size=14,
                 image_size=56),
        vae=dict(ch=32, ch_mult=(1, 1, 1, 1), num_res_blocks=1, z_channels=16),
        max_latent_size=4, vit_max_num_patch_per_side=4, vae_min_image_size=16, vit_min_image_size=28,
    ),
    # CPU benchmarks: enough width that the GEMMs, not Python, take the time; up to 256 px (16x16 latent tokens).
    "cpu-small": dict(
        llm=dict(vocab_size=4096, hidden_size=256, intermediate_size=704, num_hidden_layers=4, num_attention_heads=4,
                 num_key_value_heads=2, max_position_embeddings=4096, rope_theta=1e6),
        vit=dict(hidden_size=64, intermediate_size=128, num_hidden_layers=2, num_attention_heads=2, patch_size=14,
                 image_size=224),
        vae=dict(ch=32, ch_mult=(1, 1, 1, 1), num_res_blocks=1, z_channels=16),
        max_latent_size=16, vit_max_num_patch_per_side=16, vae_min_image_size=64, vit_min_image_size=56,
    ),
    # The published BAGEL-7B-MoT: Qwen2.5-7B geometry per expert, SigLIP so400m/14 (26 layers), FLUX AE.
    "bagel-7b-mot": dict(
        llm=dict(vocab_size=152064, hidden_size=3584, intermediate_size=18944, num_hidden_layers=28,
                 num_attention_heads=28, num_key_value_heads=4, max_position_embeddings=32768, rope_theta=1e6),
        vit=dict(hidden_size=1152, intermediate_size=4304, num_hidden_layers=26, num_attention_heads=16,
                 patch_size=14, image_size=980),
        vae=dict(ch=128, ch_mult=(1, 2, 4, 4), num_res_blocks=2, z_channels=16),
        max_latent_size=64, vit_max_num_patch_per_side=70, vae_min_image_size=512, vit_min_image_size=224,
    ),
}

QWEN2_SPECIAL_TOKENS = ["<|endoftext|>", "<|im_start|>", "<|im_end|>", "<|vision_start|>", "<|vision_end|>",
                        "<|image_pad|>"]
# Qwen2's pre-tokenizer split (tokenizer.json of the Qwen2 / Qwen2.5 checkpoints).
QWEN2_SPLIT = (r"(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}| ?[^\s\p{L}\p{N}]+[\r\n]*|"
               r"\s*[\r\n]+|\s+(?!\S)|\s+")
_CORPUS = [
    "A photo of a cat sitting on a red sofa next to a window.",
    "Describe the image in detail. What colours do you see?",
    "The quick brown fox jumps over the lazy dog near the river bank.",
    "Generate an image of a mountain lake at sunrise, with mist over the water.",
    "You should first think about the planning process in the mind and then generate the image.",
    "Numbers 0 1 2 3 4 5 6 7 8 9 and punctuation , . ; : ! ? ( ) [ ] { } - _ + = / are common.",
    "Score: 7. The image shows two red circles left of a blue square.",
] * 4


def arch_for_preset(preset: str) -> BagelArch:
    if preset not in PRESETS:
        raise ValueError(f"unknown BAGEL preset {preset!r}; known: {', '.join(PRESETS)}")
    p = PRESETS[preset]
    return BagelArch(llm=LLMArch(**p["llm"]), vit=ViTArch(**p["vit"]), vae=VAEArch(**p["vae"]),
                     max_latent_size=p["max_latent_size"], vit_max_num_patch_per_side=p["vit_max_num_patch_per_side"],
                     vae_min_image_size=p["vae_min_image_size"], vit_min_image_size=p["vit_min_image_size"])


def train_qwen2_tokenizer(vocab_size: int, corpus: list[str] | None = None):
    """A byte-level BPE with Qwen2's normalizer, split regex and special tokens (ids after the merges).

    Deterministic for a given corpus and size; ``vocab_size`` bounds the BPE part, the special tokens follow."""
    from tokenizers import Regex, Tokenizer, decoders, models, normalizers, pre_tokenizers, trainers

    tok = Tokenizer(models.BPE())
    tok.normalizer = normalizers.NFC()
    tok.pre_tokenizer = pre_tokenizers.Sequence([
        pre_tokenizers.Split(Regex(QWEN2_SPLIT), behavior="isolated"),
        pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=False),
    ])
    tok.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(vocab_size=vocab_size, initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
                                  show_progress=False)
    tok.train_from_iterator(_CORPUS if corpus is None else corpus, trainer)
    tok.add_special_tokens(QWEN2_SPECIAL_TOKENS)
    return tok


def sincos_table(side: int, hidden: int) -> torch.Tensor:
    """The frozen 2-D sin-cos table of the official PositionEmbedding ([side*side, hidden], row-major): the first
    half encodes the column, the second the row; each half is [sin, cos] over 1/10000^(i/(hidden/4))."""
    quarter = hidden // 4
    omega = 1.0 / 10000 ** (torch.arange(quarter, dtype=torch.float64) / quarter)
    rows, cols = torch.meshgrid(torch.arange(side, dtype=torch.float64), torch.arange(side, dtype=torch.float64),
                                indexing="ij")

    def one(pos):
        out = pos.reshape(-1)[:, None] * omega[None]
        return torch.cat((out.sin(), out.cos()), dim=1)

    return torch.cat((one(cols), one(rows)), dim=1).float()


def _random_tensor(name: str, shape: torch.Size, gen: torch.Generator) -> torch.Tensor:
    if name.endswith("bias"):
        return torch.randn(shape, generator=gen) * 0.02
    if len(shape) == 1:  # norm scales
        return 1.0 + torch.randn(shape, generator=gen) * 0.1
    if name.endswith("embed_tokens.weight") or name.endswith("position_embedding.weight"):
        return torch.randn(shape, generator=gen)
    fan_in = shape[1:].numel()
    return torch.randn(shape, generator=gen) * fan_in**-0.5  # activations O(1) through every stack


def random_state(model: BagelModel, seed: int = 0) -> dict[str, torch.Tensor]:
    """Random fp32 tensors for every parameter of ``model`` (names as the module's), sin-cos position tables."""
    gen = torch.Generator().manual_seed(seed)
    arch = model.arch
    state = {}
    for name, p in model.named_parameters():
        if name == "vit_pos_embed.pos_embed":
            state[name] = sincos_table(arch.vit_max_num_patch_per_side, arch.llm.hidden_size)
        elif name == "latent_pos_embed.pos_embed":
            state[name] = sincos_table(arch.max_latent_size, arch.llm.hidden_size)
        else:
            state[name] = _random_tensor(name, p.shape, gen)
    return state


def build_random_bagel(preset: str = "bagel-7b-mot", *, device="cpu", dtype=torch.bfloat16, seed: int | None = 0,
                       token_ids: BagelTokenIds | None = None) -> BagelModel:
    """A BagelModel of a preset's shapes with random weights, built in place on ``device`` (benchmarks).

    ``seed=None`` leaves the weights uninitialised (``torch.empty``), for timing only."""
    arch = arch_for_preset(preset)
    vocab = arch.llm.vocab_size
    ids = token_ids or BagelTokenIds(im_start=vocab - 4, im_end=vocab - 3, vision_start=vocab - 2, vision_end=vocab - 1,
                                     pad=vocab - 6, image_pad=vocab - 5)
    with torch.device("meta"):
        model = BagelModel(arch, ids, dtype=dtype)
    model = model.to(dtype=dtype).to_empty(device=device)
    model.language_model.model.rotary_emb.reset_inv_freq()
    if seed is not None:
        gen = torch.Generator(device=device).manual_seed(seed)
        with torch.no_grad():
            for name, p in model.named_parameters():
                if p.dim() == 1:
                    p.fill_(0.0 if name.endswith("bias") else 1.0)
                else:
                    p.normal_(0.0, p[0].numel() ** -0.5, generator=gen)
            model.vit_pos_embed.pos_embed.copy_(sincos_table(arch.vit_max_num_patch_per_side, arch.llm.hidden_size))
            model.latent_pos_embed.pos_embed.copy_(sincos_table(arch.max_latent_size, arch.llm.hidden_size))
    return model.eval()


def _write_json(path: str, data: dict) -> None:
    with open(path, "w", encoding="utf-8") as f:
        json.dump(data, f, indent=2, ensure_ascii=False)


def _write_tokenizer(path: str, tok, max_length: int) -> None:
    tok.save(os.path.join(path, "tokenizer.json"))
    tok.model.save(path)  # vocab.json + merges.txt, as the Qwen2 slow tokenizer reads them
    added = {str(tok.token_to_id(t)): {"content": t, "lstrip": False, "rstrip": False, "normalized": False,
                                       "single_word": False, "special": True} for t in QWEN2_SPECIAL_TOKENS}
    _write_json(os.path.join(path, "tokenizer_config.json"), {
        "tokenizer_class": "Qwen2Tokenizer", "add_prefix_space": False, "added_tokens_decoder": added,
        "additional_special_tokens": QWEN2_SPECIAL_TOKENS[1:], "bos_token": None, "eos_token": "<|im_end|>",
        "pad_token": "<|endoftext|>", "unk_token": None, "errors": "replace", "model_max_length": max_length,
        "split_special_tokens": False, "clean_up_tokenization_spaces": False,
    })


def write_random_bagel_checkpoint(path: str, *, preset: str = "tiny", seed: int = 0) -> str:
    """Writes a random fp32 BAGEL in the official layout (see the module docstring); returns ``path``."""
    from safetensors.torch import save_file

    arch = arch_for_preset(preset)
    os.makedirs(path, exist_ok=True)
    llm, vit = arch.llm, arch.vit
    tok = train_qwen2_tokenizer(min(llm.vocab_size - len(QWEN2_SPECIAL_TOKENS), 4096))
    if tok.get_vocab_size() > llm.vocab_size:
        raise ValueError(f"tokenizer of {tok.get_vocab_size()} tokens exceeds vocab_size {llm.vocab_size}")
    _write_tokenizer(path, tok, llm.max_position_embeddings)
    ids = BagelTokenIds(im_start=tok.token_to_id("<|im_start|>"), im_end=tok.token_to_id("<|im_end|>"),
                        vision_start=tok.token_to_id("<|vision_start|>"), vision_end=tok.token_to_id("<|vision_end|>"),
                        pad=tok.token_to_id("<|endoftext|>"))
    _write_json(os.path.join(path, "llm_config.json"), {
        "architectures": ["Qwen2ForCausalLM"], "model_type": "qwen2", "attention_dropout": 0.0,
        "bos_token_id": ids.pad, "eos_token_id": ids.pad, "hidden_act": "silu", "hidden_size": llm.hidden_size,
        "initializer_range": 0.02, "intermediate_size": llm.intermediate_size,
        "max_position_embeddings": llm.max_position_embeddings, "max_window_layers": llm.num_hidden_layers,
        "num_attention_heads": llm.num_attention_heads, "num_hidden_layers": llm.num_hidden_layers,
        "num_key_value_heads": llm.num_key_value_heads, "rms_norm_eps": llm.rms_norm_eps,
        "rope_theta": llm.rope_theta, "sliding_window": 131072, "tie_word_embeddings": False,
        "torch_dtype": "float32", "use_cache": True, "use_sliding_window": False, "vocab_size": llm.vocab_size,
    })
    _write_json(os.path.join(path, "vit_config.json"), {
        "hidden_size": vit.hidden_size, "image_size": vit.image_size, "intermediate_size": vit.intermediate_size,
        "model_type": "siglip_vision_model", "num_attention_heads": vit.num_attention_heads,
        "num_hidden_layers": vit.num_hidden_layers + 1, "patch_size": vit.patch_size,  # the official quirk
    })
    _write_json(os.path.join(path, "config.json"), {
        "model_type": "bagel", "visual_gen": True, "visual_und": True, "latent_patch_size": arch.latent_patch_size,
        "max_latent_size": max(1, arch.max_latent_size // 2),  # stale on purpose, as the published config.json
        "vit_max_num_patch_per_side": arch.vit_max_num_patch_per_side, "connector_act": arch.connector_act,
        "interpolate_pos": False, "timestep_shift": 1.0, "vae_config": {"downsample": arch.vae.downsample,
                                                                         "z_channels": arch.vae.z_channels},
        "unicorn_image_limits": {"vae_min_image_size": arch.vae_min_image_size,
                                 "vit_min_image_size": arch.vit_min_image_size},
    })
    with torch.device("meta"):
        model = BagelModel(arch, ids)
    state = random_state(model, seed)
    save_file({k: v.contiguous() for k, v in state.items() if not k.startswith("vae.")},
              os.path.join(path, "ema.safetensors"), metadata={"format": "pt"})
    save_file({k[len("vae."):]: v.contiguous() for k, v in state.items() if k.startswith("vae.")},
              os.path.join(path, "ae.safetensors"), metadata={"format": "pt"})
    return path


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description="Write a random-weight BAGEL checkpoint in the official layout.")
    parser.add_argument("path")
    parser.add_argument("--preset", default="tiny", choices=sorted(PRESETS))
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args(argv)
    print(write_random_bagel_checkpoint(args.path, preset=args.preset, seed=args.seed))


if __name__ == "__main__":
    main()
