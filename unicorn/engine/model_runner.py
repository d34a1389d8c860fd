"""Runs one scheduled step: packs every row's new tokens into one varlen forward, then samples.

The runner knows models only through the interface of ``unicorn.models`` (embeddings, a paged forward,
heads, image codec); it imports no concrete model.
"""
from __future__ import annotations

import functools

import torch

from unicorn.attention import AttentionMetadata, KVCache
from unicorn.engine.kv_cache import copy_blocks
from unicorn.engine.logprobs import token_logprobs
from unicorn.engine.sampler import Sampler, SamplingBatch, sample_seed
from unicorn.engine.scheduler import SchedulerOutput
from unicorn.engine.sequence import Request, RequestKind, Sequence
from unicorn.kernels.dispatch import kernel_choice


def _under_kernel_choice(method):
    # The engine's kernels choice reaches every elementwise dispatcher in the model (kernels="torch" means the
    # references on CUDA too), not only attention and sampling, which the runner picks itself.
    @functools.wraps(method)
    def run(self, *args, **kwargs):
        with kernel_choice(self.attention_backend):
            return method(self, *args, **kwargs)
    return run


class ModelRunner:
    def __init__(
        self, model, kv_caches: list[KVCache], block_size: int, kernels: str = "torch",
        cfg_head_mix: bool = True) -> None:
        self.model = model
        # CFG on the input of the image head's last linear layer when the model exposes it (one GEMM per image
        # instead of two; equal to mixing logits in real arithmetic, see _sample_images).
        self.cfg_head_mix = cfg_head_mix and hasattr(model, "image_head_features")
        self.spec = model.spec
        self.kv_caches = kv_caches
        self.block_size = block_size
        self.attention_backend = kernels  # "torch", "cpu" or "triton": the attention and sampling implementations
        self.device = kv_caches[0].key.device
        self.sampler = Sampler(kernels)
        self.encoder_cache: dict[int, torch.Tensor] = {}  # image content hash -> [num_image_tokens, H]

    # ---- inputs ---------------------------------------------------------------------------------
    def _image_features(self, seq: Sequence, start: int, end: int) -> list[tuple[int, int, torch.Tensor, bool]]:
        """(packed-relative start, end, features, on the generation expert) for the image placeholder tokens in
        [start, end)."""
        spans = []
        for image in seq.images:
            lo, hi = max(start, image.offset), min(end, image.offset + image.length)
            if lo >= hi:
                continue
            key = image.content_hash if image.encoder is None else (image.content_hash, image.encoder)
            features = self.encoder_cache.get(key)
            if features is None:
                pixels = image.pixel_values.to(self.device, self.spec.dtype)
                extra = {} if image.encoder is None else {"encoder": image.encoder}
                features = self.model.encode_images(pixels[None], **extra)[0]
                self.encoder_cache[key] = features
            gen = image.encoder is not None and image.encoder in getattr(self.model, "generation_encoders", ())
            spans.append((lo - start, hi - start, features[lo - image.offset : hi - image.offset], gen))
        return spans

    def _embed(self, out: SchedulerOutput) -> tuple[torch.Tensor, torch.Tensor, list[int]]:
        """The step's input embeddings, rope positions and the packed rows on the model's generation expert
        (flow query rows' latent tokens; empty for models without one)."""
        ids: list[int] = []
        positions: list[int] = []
        is_image_code: list[bool] = []
        overrides: list[tuple[int, int, torch.Tensor]] = []
        gen_rows: list[int] = []
        queries: dict[int, tuple[list[torch.Tensor], range]] = {}  # state id -> every rollout's query block
        for item in out.rows:
            seq, start = item.seq, item.seq.num_computed_tokens
            end = start + item.num_new_tokens
            base = len(ids)
            ids.extend(seq.token_ids[start:end])
            positions.extend(seq.positions(start, end))
            if seq.flow_ref is not None:  # a denoising query: every branch of a rollout shares its embeddings
                state, i, _ = seq.flow_ref
                if id(state) not in queries:  # all rollouts of the request at once (they step together)
                    queries[id(state)] = self.model.flow.query_embeds(state.plan, state.step, state.latents)
                blocks, gen = queries[id(state)]
                embeds = blocks[i]
                overrides.append((base, base + len(embeds), embeds))
                gen_rows.extend(base + g for g in gen)
                is_image_code.extend([False] * (end - start))
                continue
            image_outputs = seq.output_kind == "image"
            is_image_code.extend(image_outputs and p >= seq.num_prompt_tokens for p in range(start, end))
            for lo, hi, feats, gen in self._image_features(seq, start, end):
                overrides.append((base + lo, base + hi, feats))
                if gen:
                    gen_rows.extend(range(base + lo, base + hi))
        ids_t = torch.tensor(ids, dtype=torch.long, device=self.device)
        code_mask = torch.tensor(is_image_code, dtype=torch.bool, device=self.device)
        if code_mask.all():
            embeds = self.model.embed_image_tokens(ids_t)
        elif not code_mask.any():
            embeds = self.model.embed_text(ids_t)
        else:  # a step mixing prompt text and image codes
            embeds = torch.empty(len(ids), self.spec.hidden_size, dtype=self.spec.dtype, device=self.device)
            embeds[~code_mask] = self.model.embed_text(ids_t[~code_mask])
            embeds[code_mask] = self.model.embed_image_tokens(ids_t[code_mask])
        for lo, hi, feats in overrides:
            embeds[lo:hi] = feats.to(embeds.dtype)
        return embeds, torch.tensor(positions, dtype=torch.long, device=self.device), gen_rows

    def _metadata(self, out: SchedulerOutput) -> AttentionMetadata:
        spans = [item.seq.spans for item in out.rows]
        return AttentionMetadata.build(
            query_lens=[item.num_new_tokens for item in out.rows],
            seq_lens=[item.seq.num_computed_tokens + item.num_new_tokens for item in out.rows],
            block_tables=[item.seq.block_table for item in out.rows],
            block_size=self.block_size,
            device=self.device,
            backend=self.attention_backend,
            spans=spans if any(spans) else None,
            decode_seqs=[item.num_new_tokens == 1 and item.seq.num_computed_tokens >= item.seq.num_prompt_tokens
                         for item in out.rows],
        )

    # ---- the step -------------------------------------------------------------------------------
    @torch.inference_mode()
    @_under_kernel_choice
    def execute(self, out: SchedulerOutput) -> dict[int, list[int | None]]:
        """Runs the step's forward and returns ``{request_id: [token per sample]}`` for sampling requests."""
        copy_blocks(self.kv_caches, out.block_copies)
        embeds, positions, gen_rows = self._embed(out)
        meta = self._metadata(out)
        if gen_rows:
            gen = torch.tensor(gen_rows, dtype=torch.long, device=self.device)
            hidden = self.model.forward(embeds, positions, self.kv_caches, meta, gen_rows=gen)
        else:
            hidden = self.model.forward(embeds, positions, self.kv_caches, meta)
        self._record_prompt_logprobs(out, hidden)
        if out.flow_steps:
            self._denoise(out, hidden)
        last_index: dict[int, int] = {}
        end = 0
        for item in out.rows:
            end += item.num_new_tokens
            last_index[item.seq.seq_id] = end - 1
        return self._sample(out.sampling_requests, hidden, last_index)

    def _denoise(self, out: SchedulerOutput, hidden: torch.Tensor) -> None:
        """Advances each rollout of the step's flow requests by one step, from its branches' query rows."""
        branches: dict[tuple[int, int], dict[str, torch.Tensor]] = {}
        base = 0
        for item in out.rows:
            if item.seq.flow_ref is not None:
                state, i, branch = item.seq.flow_ref
                branches.setdefault((id(state), i), {})[branch] = hidden[base : base + item.num_new_tokens]
            base += item.num_new_tokens
        for request in out.flow_steps:
            state = request.flow
            for i in range(request.n):
                state.latents[i] = self.model.flow.update(state.plan, state.step, i, state.latents[i],
                                                          branches[(id(state), i)])

    def _record_prompt_logprobs(self, out: SchedulerOutput, hidden: torch.Tensor) -> None:
        """For rows asking prompt logprobs: hidden at position p scores prompt token p + 1 (chunks included)."""
        base = 0
        for item in out.rows:
            seq, start = item.seq, item.seq.num_computed_tokens
            last = min(start + item.num_new_tokens, seq.num_prompt_tokens - 1)
            if seq.prompt_logprobs is not None and last > start:
                logits = self.model.text_logits(hidden[base : base + last - start])
                records = token_logprobs(logits, seq.token_ids[start + 1 : last + 1], seq.prompt_logprobs)
                seq.prompt_logprob_records.update(zip(range(start + 1, last + 1), records))
            base += item.num_new_tokens

    def _sample(
        self, requests: list[Request], hidden: torch.Tensor, last_index: dict[int, int]
    ) -> dict[int, list[int | None]]:
        results: dict[int, list[int | None]] = {}
        text = [r for r in requests if r.kind is RequestKind.TEXT]
        image = [r for r in requests if r.kind is RequestKind.IMAGE]
        if text:
            self._sample_group(text, hidden, last_index, results)
        if image:
            self._sample_images(image, hidden, last_index, results)
        return results

    def _sample_group(self, requests, hidden, last_index, results) -> None:
        # Text requests. One logits row per live sample; before the fork a request's n samples share the
        # template's logits.
        cond_rows: list[int] = []
        batch = SamplingBatch([], [], [], [], [])
        slots: list[tuple[int, int]] = []  # (request_id, sample index) per logits row
        constrained = []  # (logits row, grammars, sample index) of samples with a json_schema
        for request in requests:
            params = request.params
            results[request.request_id] = [None] * request.n
            for i in request.live_samples():
                rows = request.sample_rows(i if request.forked else 0)
                if request.grammars:
                    constrained.append((len(slots), request.grammars, i))
                cond_rows.append(last_index[rows[0].seq_id])
                batch.temperature.append(params.temperature)
                batch.top_k.append(params.top_k)
                batch.top_p.append(params.top_p)
                batch.seeds.append(sample_seed(request.seed, i))
                batch.steps.append(rows[0].num_output_tokens)
                slots.append((request.request_id, i))
        logits = self.model.text_logits(hidden[cond_rows])
        if constrained:  # a masked copy: logprobs stay those of the raw distribution
            from unicorn.engine.structured import mask_logits

            tokens = self.sampler(mask_logits(logits, constrained), None, None, batch).tolist()
        else:
            tokens = self.sampler(logits, None, None, batch).tolist()
        self._leave_sample_logprobs(requests, slots, logits, tokens)
        for (request_id, i), token in zip(slots, tokens):
            results[request_id][i] = token

    def _sample_images(self, requests, hidden, last_index, results) -> None:
        """Image requests: one logits row per live image, each with its own settings (ImageGenParams lists).

        Image ``i`` draws as a separate n=1 request with its settings would: its seed is
        ``sample_seed(seed[i], 0)`` with a seed list (``sample_seed(seed, i)`` with one seed), and at scale 1.0
        its "unconditional" logits are its conditional ones (guided = cond exactly, as in a request without
        unconditional rows)."""
        cond_rows: list[int] = []
        uncond_rows: list[int] = []
        scales: list[float] = []
        batch = SamplingBatch([], [], [], [], [])
        slots: list[tuple[int, int]] = []  # (request_id, image index) per logits row
        for request in requests:
            params = request.params
            seeds = params.seeds
            results[request.request_id] = [None] * request.n
            for i in request.live_samples():
                rows = request.sample_rows(i if request.forked else 0)
                scale = float(params.value("cfg_scale", i))
                cond = last_index[rows[0].seq_id]
                guided = len(rows) > 1 and scale != 1.0
                cond_rows.append(cond)
                uncond_rows.append(last_index[rows[1].seq_id] if guided else cond)
                scales.append(scale if guided else 1.0)
                batch.temperature.append(float(params.value("temperature", i)))
                batch.top_k.append(int(params.value("top_k", i)))
                batch.top_p.append(float(params.value("top_p", i)))
                batch.seeds.append(sample_seed(seeds[i], 0) if seeds is not None else sample_seed(request.seed, i))
                batch.steps.append(rows[0].num_output_tokens)
                slots.append((request.request_id, i))
        unique = sorted(set(cond_rows) | set(uncond_rows))
        where = {row: k for k, row in enumerate(unique)}
        cond_at = torch.tensor([where[r] for r in cond_rows], device=hidden.device)
        uncond_at = torch.tensor([where[r] for r in uncond_rows], device=hidden.device)
        if self.cfg_head_mix:
            # logits = W f + b is affine in the features f, so uncond + s * (cond - uncond) of the logits is W of
            # the same mix of features, + b: the last (largest) GEMM runs on one row per image instead of two.
            # The mix is in fp32, as the sampler's mix of logits; a scale-1 row mixes its cond row with itself.
            features = self.model.image_head_features(hidden[unique]).float()
            f_cond, f_uncond = features[cond_at], features[uncond_at]
            scale = torch.tensor(scales, dtype=torch.float32, device=hidden.device)[:, None]
            mixed = f_uncond + scale * (f_cond - f_uncond)
            guided = self.model.image_head_logits(mixed.to(self.spec.dtype))
            tokens = self.sampler(guided, None, None, batch).tolist()
        else:
            logits = self.model.image_logits(hidden[unique])
            tokens = self.sampler(logits[cond_at], logits[uncond_at], scales, batch).tolist()
        for (request_id, i), token in zip(slots, tokens):
            results[request_id][i] = token

    @staticmethod
    def _leave_sample_logprobs(requests, slots, logits: torch.Tensor, tokens: list[int]) -> None:
        """Leaves each sampled token's logprob record for on_token (it lands only if the token is accepted)."""
        by_id = {r.request_id: r for r in requests}
        rows = [k for k, (rid, _) in enumerate(slots) if by_id[rid].params.logprobs is not None]
        if not rows:
            return
        ks = {by_id[slots[k][0]].params.logprobs for k in rows}
        for k_top in ks:
            picked = [k for k in rows if by_id[slots[k][0]].params.logprobs == k_top]
            records = token_logprobs(logits[picked], [tokens[k] for k in picked], k_top)
            for k, record in zip(picked, records):
                request_id, i = slots[k]
                by_id[request_id].pending_logprobs[i] = record

    @_under_kernel_choice
    def decode_images(self, image_tokens: torch.Tensor, chunk: int | None = None) -> torch.Tensor:
        """VQ-decodes [N, num_generated_image_tokens] codes to pixels, ``chunk`` images at a time: by default one on a CPU
        (a 384 px image's activations already overflow the caches: batch 8 in one call was ~1.6x slower per
        image, bench/vq_decode.py), so an image's pixels depend on its codes alone (oneDNN may pick another
        convolution kernel for another batch size); 8 on a GPU."""
        chunk = chunk or (1 if self.device.type == "cpu" else 8)
        with torch.inference_mode():
            if not isinstance(image_tokens, torch.Tensor):  # a flow request's final latents (FlowLatents)
                return self.model.flow.decode(image_tokens.plan, image_tokens.latents.to(self.device))
            codes = image_tokens.to(self.device)
            return torch.cat([self.model.decode_image_tokens(codes[i : i + chunk]) for i in range(0, len(codes), chunk)])

    def release_images(self, request: Request) -> None:
        for row in request.rows:
            for image in row.images:
                self.encoder_cache.pop(image.content_hash if image.encoder is None else (image.content_hash, image.encoder), None)
