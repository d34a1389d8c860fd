"""Tiny random Janus models in transformers (the reference) and helpers to run ours over a paged cache.

Shared by tests/models and tests/engine."""
import random

import torch

from unicorn.attention import AttentionMetadata, KVCache

BOS, EOS, PAD, IMAGE, BOI, EOI = 1, 2, 0, 250, 251, 252

HF_CONFIGS = {
    # GQA, non-power-of-two hidden (48), VQ downsampling 8 = patch size
    "gqa48": dict(hidden=48, heads=4, kv_heads=2, vision_hidden=40, vision_heads=2, tie=True),
    # MHA, hidden 40, untied lm_head
    "mha40": dict(hidden=40, heads=5, kv_heads=5, vision_hidden=32, vision_heads=4, tie=False),
}


def make_hf_janus(name: str, seed: int = 0):
    from transformers import GenerationConfig, JanusConfig, JanusForConditionalGeneration

    c = HF_CONFIGS[name]
    cfg = JanusConfig(
        text_config=dict(model_type="llama", vocab_size=256, hidden_size=c["hidden"], intermediate_size=72,
                         num_hidden_layers=2, num_attention_heads=c["heads"], num_key_value_heads=c["kv_heads"],
                         max_position_embeddings=256, bos_token_id=BOS, eos_token_id=EOS, pad_token_id=PAD),
        vision_config=dict(hidden_size=c["vision_hidden"], num_hidden_layers=2, num_attention_heads=c["vision_heads"],
                           image_size=32, patch_size=8, num_image_tokens=16, projection_dim=c["hidden"], mlp_ratio=2,
                           depth=2),
        vq_config=dict(embed_dim=8, num_embeddings=64, latent_channels=16, base_channels=32,
                       channel_multiplier=[1, 1, 1, 2], num_res_blocks=1, projection_dim=c["hidden"],
                       image_token_embed_dim=c["hidden"], num_hidden_layers=2),
        image_token_id=IMAGE,
        tie_word_embeddings=c["tie"],
    )
    torch.manual_seed(seed)
    model = JanusForConditionalGeneration(cfg).eval()
    with torch.no_grad():  # transformers inits norms to 1 and biases to 0; perturb so their mapping is tested
        for n, p in model.named_parameters():
            if p.dim() == 1:
                p.add_(torch.randn_like(p) * 0.1)
    model.generation_config = GenerationConfig(
        bos_token_id=BOS, eos_token_id=EOS, pad_token_id=PAD,
        generation_kwargs={"boi_token_id": BOI, "eoi_token_id": EOI},
    )
    return model




def prompt_with_image(num_image_tokens=16, seed=0):
    gen = torch.Generator().manual_seed(seed)
    text = torch.randint(3, 240, (7,), generator=gen).tolist()
    ids = [BOS] + text[:3] + [BOI] + [IMAGE] * num_image_tokens + [EOI] + text[3:]
    return torch.tensor(ids)


def make_caches(spec, num_blocks, block_size, dtype=torch.float32):
    shape = (num_blocks, block_size, spec.num_kv_heads, spec.head_dim)
    return [KVCache(torch.zeros(shape, dtype=dtype), torch.zeros(shape, dtype=dtype)) for _ in range(spec.num_layers)]


def run_paged_in_steps(model, embeds: list[torch.Tensor], steps: list[list[int]], block_size: int, seed: int = 0):
    """Feeds each sequence's embeddings [L_i, H] in steps (tokens per sequence per step, 0 = skip);
    returns each sequence's hidden states [L_i, H] gathered over all steps."""
    rng = random.Random(seed)
    blocks_needed = [(e.shape[0] + block_size - 1) // block_size for e in embeds]
    free = list(range(1, sum(blocks_needed) + 1))  # block 0 unused, so a zero-padded table entry is harmless
    rng.shuffle(free)
    tables = []
    for n in blocks_needed:
        tables.append(free[:n])
        free = free[n:]
    caches = make_caches(model.spec, sum(blocks_needed) + 1, block_size)
    done = [0] * len(embeds)
    outs = [[] for _ in embeds]
    for step in steps:
        active = [i for i, n in enumerate(step) if n]
        x = torch.cat([embeds[i][done[i] : done[i] + step[i]] for i in active])
        pos = torch.cat([torch.arange(done[i], done[i] + step[i]) for i in active])
        meta = AttentionMetadata.build(
            query_lens=[step[i] for i in active], seq_lens=[done[i] + step[i] for i in active],
            block_tables=[tables[i] for i in active], block_size=block_size,
        )
        hidden = model(x, pos, caches, meta)
        start = 0
        for i in active:
            outs[i].append(hidden[start : start + step[i]])
            start += step[i]
            done[i] += step[i]
    return [torch.cat(o) for o in outs]
