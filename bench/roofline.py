"""The work a benchmark's workload must do, counted from the model's own shapes (../shared/engine-notes.md §5).

Janus image tokens are bandwidth-bound: ``janus_decode_work`` counts the bytes the decode must read (every row's
KV context once per step, the weights once per forward) and the FLOPs. BAGEL denoising is compute-bound:
``bagel_denoise_flops`` counts the FLOPs of a job's forwards (linear layers on each token's expert, attention
over each branch's context).
"""
from __future__ import annotations

from torch import nn


def matrix_params(module: nn.Module, keep=lambda name: True) -> int:
    """Parameters of the weight matrices (2-D and up) whose names pass ``keep``: each costs one MAC per token."""
    return sum(p.numel() for name, p in module.named_parameters() if p.dim() >= 2 and keep(name))


def janus_decode_work(model, tokens: int, prompt_lens: list[int], rollouts: int, kv_bytes_per_token: int,
                      weight_bytes: int, forwards: int) -> dict:
    """The token generation of ``rollouts`` CFG images of ``tokens`` codes per prompt (``prompt_lens``: each
    prompt's length, the unconditional row's is the same): KV bytes read (each of the 2 rows of an image reads its
    whole context at every decode step), weight bytes read (``weight_bytes`` once per forward: ``forwards`` steps
    or calls), and the FLOPs (2 per MAC of every row's decoder layers and image head; attention 4 * context *
    heads * head_dim per row and step)."""
    spec = model.spec
    decode_steps = tokens - 1  # the prefill gives the first token
    # the decode step making token i + 1 reads a context of p + i tokens (i = 1 .. tokens - 1), on both rows
    kv_tokens = sum(2 * rollouts * (decode_steps * p + decode_steps * (decode_steps + 1) // 2) for p in prompt_lens)
    flops = 2 * janus_token_macs(model) * 2 * rollouts * tokens * len(prompt_lens)
    flops += 4 * kv_tokens * spec.num_heads * spec.head_dim * spec.num_layers
    kv_bytes = kv_tokens * kv_bytes_per_token
    return {"kv_bytes": kv_bytes, "weight_bytes": weight_bytes * forwards, "bytes": kv_bytes + weight_bytes * forwards,
            "flops": flops, "kv_bytes_per_image": kv_bytes / (rollouts * len(prompt_lens)),
            "flops_per_image": flops / (rollouts * len(prompt_lens))}


def janus_token_macs(model) -> int:
    """MACs of one generated token on one row: the decoder layers, the image head and the code embedding's aligner."""
    return (matrix_params(model.language_model, lambda n: n.startswith("layers."))
            + matrix_params(model.generation_head) + matrix_params(model.generation_aligner))


def janus_weight_bytes(model) -> int:
    """Bytes of the weights one image-token forward reads (decoder layers and norms, image head, aligner)."""
    parts = (model.language_model.layers, model.language_model.norm, model.generation_head, model.generation_aligner)
    return sum(p.numel() * p.element_size() for part in parts for p in part.parameters())


def bagel_forward_flops(model, num_latent: int, context_len: int) -> int:
    """One denoising forward of one branch: ``num_latent`` latent tokens on the generation expert and the two
    markers on the understanding expert, through every decoder layer, plus the latent in/out projections and the
    timestep embedder; attention of the ``num_latent + 2`` queries over ``context_len`` cached tokens and themselves."""
    arch = model.arch.llm
    layers = model.language_model.model.layers
    gen = matrix_params(layers, lambda n: "_moe_gen" in n)
    und = matrix_params(layers, lambda n: "_moe_gen" not in n)
    side = matrix_params(model.vae2llm) + matrix_params(model.llm2vae) + matrix_params(model.time_embedder)
    queries = num_latent + 2
    linear = 2 * (num_latent * (gen + side) + 2 * und)
    attention = (4 * queries * (context_len + queries) * arch.num_attention_heads * arch.head_dim
                 * arch.num_hidden_layers)
    return linear + attention


def bagel_denoise_flops(model, height: int, width: int, params, cond_context: int, uncond_context: int = 0) -> int:
    """All forwards of one image under FlowParams ``params``: at each step the conditional branch, and the
    text-unconditional one (over ``uncond_context`` tokens) while text CFG is on (plain T2I: no image branch)."""
    num_latent = (height // model.arch.latent_downsample) * (width // model.arch.latent_downsample)
    ts, _ = params.schedule()
    cond = bagel_forward_flops(model, num_latent, cond_context)
    uncond = bagel_forward_flops(model, num_latent, uncond_context)
    return sum(cond + (uncond if params.scales_at(float(t))[0] > 1.0 else 0) for t in ts.tolist())
