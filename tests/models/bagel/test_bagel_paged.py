"""BagelModel.forward over the engine's paged KV cache (unicorn.attention) gives what the cached-context path
gives: understanding (image block prefilled as one non-causal step, text causal, greedy decode) and a T2I
denoising step whose cond and uncond rows run in one non-causal paged forward."""
import torch

from unicorn.attention import AttentionMetadata, KVCache
from unicorn.models.bagel_flow import FlowParams
from unicorn.models.bagel_infer import BagelInference, ImageJob

BLOCK = 4


class _Paged:
    """A bump allocator of cache blocks and, per sequence, its block table, length and next rope position."""

    def __init__(self, model, num_blocks=96):
        spec = model.spec
        self.caches = [KVCache(torch.zeros(num_blocks, BLOCK, spec.num_kv_heads, spec.head_dim),
                               torch.zeros(num_blocks, BLOCK, spec.num_kv_heads, spec.head_dim))
                       for _ in range(spec.num_layers)]
        self.next_block = 0
        self.model = model

    def new(self):
        return dict(table=[], length=0, rope=0)

    def _grow(self, seq, length):
        while len(seq["table"]) * BLOCK < length:
            seq["table"].append(self.next_block)
            self.next_block += 1

    def forward(self, seqs, embeds, lens, causal, gen_rows=None, same_position=False, keep=True):
        positions = []
        for seq, n in zip(seqs, lens):
            self._grow(seq, seq["length"] + n)
            positions += [seq["rope"]] * n if same_position else range(seq["rope"], seq["rope"] + n)
        meta = AttentionMetadata.build(query_lens=lens, seq_lens=[s["length"] + n for s, n in zip(seqs, lens)],
                                       block_tables=[s["table"] for s in seqs], block_size=BLOCK, causal=causal)
        hidden = self.model.forward(embeds, torch.tensor(positions), self.caches, meta, gen_rows)
        if keep:
            for seq, n in zip(seqs, lens):
                seq["length"] += n
                seq["rope"] += 1 if same_position else n
        return hidden


@torch.no_grad()
def test_paged_understanding_matches_cached_contexts(bagel_tiny):
    ids = bagel_tiny.token_ids
    image = torch.rand(3, 42, 56, generator=torch.Generator().manual_seed(0)) * 2 - 1
    prompt = [40, 41, 42, 43, 44, 45, 46]
    infer = BagelInference(bagel_tiny)
    ctx = infer.new_context()
    infer.add_vit_images([ctx], [image])
    infer.add_text([ctx], [prompt])
    (expected,) = infer.generate_text([ctx], max_tokens=8)

    paged = _Paged(bagel_tiny)
    seq = paged.new()
    (vit,) = bagel_tiny.encode_vit([image])
    marks = bagel_tiny.embed_text(torch.tensor([ids.vision_start, ids.vision_end]))
    block = torch.cat((marks[:1], vit, marks[1:]))
    paged.forward([seq], block, [block.shape[0]], causal=False, same_position=True)
    text = [ids.im_start, *prompt, ids.im_end]
    paged.forward([seq], bagel_tiny.embed_text(torch.tensor(text)), [len(text)], causal=True)
    got, current = [], ids.im_start
    for _ in range(8):
        hidden = paged.forward([seq], bagel_tiny.embed_text(torch.tensor([current])), [1], causal=True)
        current = int(bagel_tiny.text_logits(hidden).argmax(-1))
        if current == ids.im_end:
            break
        got.append(current)
    assert got == expected and len(got) > 0


@torch.no_grad()
def test_paged_denoise_step_batches_branches(bagel_tiny):
    ids = bagel_tiny.token_ids
    prompt = [50, 51, 52, 53, 54]
    noise = torch.randn(16, 64, generator=torch.Generator().manual_seed(1))
    params = FlowParams(num_timesteps=2, cfg_text_scale=4.0, cfg_img_scale=1.0)  # one step at t = 1
    infer = BagelInference(bagel_tiny)
    ctx, uncond = infer.new_context(), infer.new_context()
    infer.add_text([ctx], [prompt])
    (expected,) = infer.generate_images([ImageJob(ctx, uncond, 64, 64, noise, params)])

    paged = _Paged(bagel_tiny)
    cond_seq, uncond_seq = paged.new(), paged.new()
    text = [ids.im_start, *prompt, ids.im_end]
    paged.forward([cond_seq], bagel_tiny.embed_text(torch.tensor(text)), [len(text)], causal=True)
    marks = bagel_tiny.embed_text(torch.tensor([ids.vision_start, ids.vision_end]))
    body = bagel_tiny.embed_latents(noise, torch.ones(16), bagel_tiny.latent_positions(64, 64))
    block = torch.cat((marks[:1], body, marks[1:]))
    gen_rows = torch.tensor([*range(1, 17), *range(19, 35)])
    hidden = paged.forward([cond_seq, uncond_seq], torch.cat((block, block)), [18, 18], causal=False,
                           gen_rows=gen_rows, same_position=True, keep=False)
    v = bagel_tiny.velocity(hidden)
    v_cond, v_uncond = v[1:17], v[19:35]
    guided = v_uncond + 4.0 * (v_cond - v_uncond)
    guided = guided * (v_cond.norm() / (guided.norm() + 1e-8)).clamp(max=1.0)
    _, dt = params.schedule()
    torch.testing.assert_close(noise - guided * dt[0], expected, rtol=1e-4, atol=1e-5)
