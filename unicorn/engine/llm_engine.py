"""The public engine: load a checkpoint, then generate text or images with continuous batching."""
from __future__ import annotations

import os
import random
import sys
import time
from dataclasses import dataclass

import torch

from unicorn.engine.block_manager import BlockManager
from unicorn.engine.kv_cache import allocate_kv_caches, default_kv_budget, num_blocks_for_budget
from unicorn.engine.model_runner import ModelRunner
from unicorn.engine.outputs import ImageOutput, TextOutput, TextSample
from unicorn.engine.params import ImageGenParams, SamplingParams
from unicorn.engine.scheduler import Scheduler, SchedulerConfig
from unicorn.engine.prompts import PromptProcessor, RequestError
from unicorn.engine.sequence import Request, RequestKind, Sequence, new_request_id
from unicorn.engine.stop import truncate_at_stop
from unicorn.engine.text_hooks import attach_text_hooks


@dataclass
class EngineStats:
    num_steps: int = 0
    num_batched_tokens: int = 0
    num_preemptions: int = 0
    prefix_hit_tokens: int = 0
    prefix_query_tokens: int = 0
    elapsed_s: float = 0.0


def _choose_kernels(name: str, device: torch.device) -> str:
    """"auto": the Triton kernels on a CUDA device, the C++ CPU decode kernel on a CPU (each when it builds
    here), else the torch references ("torch")."""
    if name not in ("auto", "triton", "cpu", "torch"):
        raise ValueError(f"kernels must be 'auto', 'triton', 'cpu' or 'torch', got {name!r}")
    if name == "torch":
        return "torch"
    if name == "cpu" or (name == "auto" and device.type == "cpu"):
        from unicorn.kernels.cpu_attention import register_cpu_backend

        if register_cpu_backend():
            return "cpu"
        if name == "cpu":
            raise ValueError("kernels='cpu' needs a C++ compiler to build csrc/cpu (set none up here)")
        return "torch"
    from unicorn.kernels.attention_backend import register_triton_backends

    registered = register_triton_backends()
    if name == "auto":
        return "triton" if registered and device.type == "cuda" else "torch"
    if not registered:
        raise ValueError("kernels='triton' needs the triton package")
    return "triton"


def _kv_cache_dtype(name: str, model_dtype: torch.dtype) -> torch.dtype:
    choices = {"auto": model_dtype, "fp8_e4m3": torch.float8_e4m3fn}
    if name not in choices:
        raise ValueError(f"kv_cache_dtype must be one of {', '.join(choices)}, got {name!r}")
    return choices[name]


class Engine:
    """Batched, paged-KV inference for a unified multimodal model.

    Args:
        model_path: a checkpoint directory (transformers' Janus layout or DeepSeek's original layout).
        device, dtype: where and in what precision the weights and the KV cache live.
        block_size: tokens per KV block.
        max_num_seqs: rows batched at once (a CFG image uses two).
        max_num_batched_tokens: token budget of one step (prefill chunks + decode rows).
        max_model_len: context limit (defaults to the model's).
        num_kv_blocks: size the pool exactly; otherwise ``kv_cache_memory`` bytes, otherwise a share of free memory.
        enable_prefix_caching: share computed blocks between requests by content hash.
        kv_cache_dtype: "auto" (the model's dtype) or "fp8_e4m3" (half the KV bytes of bf16, scale 1.0).
        kernels: "auto" (Triton kernels on CUDA, the C++ decode-attention kernel on CPU), "triton", "cpu" or
            "torch" (the plain references); "triton" on CPU tensors needs TRITON_INTERPRET=1.
        seed: seeds requests that do not give their own seed.
    """

    def __init__(
        self,
        model_path: str,
        device: str | torch.device = "cpu",
        dtype: torch.dtype | str = torch.float32,
        *,
        block_size: int = 16,
        max_num_seqs: int = 256,
        max_num_batched_tokens: int = 4096,
        max_model_len: int | None = None,
        num_kv_blocks: int | None = None,
        kv_cache_memory: int | None = None,
        memory_fraction: float = 0.85,
        enable_prefix_caching: bool = True,
        enable_chunked_prefill: bool = True,
        image_row_fraction: float = 0.75,
        kernels: str = "auto",
        kv_cache_dtype: str = "auto",
        seed: int = 0,
        model=None,
        tokenizer=None,
    ) -> None:
        from unicorn.models import load_model, load_tokenizer

        self.model_path = model_path
        self.device = torch.device(device)
        if isinstance(dtype, str):
            dtype = getattr(torch, dtype)
        self.model = model if model is not None else load_model(model_path, device=self.device, dtype=dtype)
        if tokenizer is None and os.path.exists(os.path.join(model_path, "tokenizer.json")):
            tokenizer = load_tokenizer(model_path)
        self.tokenizer = tokenizer  # optional: without one, prompts are token ids and outputs carry no text
        self.spec = self.model.spec
        spec = self.spec
        self.max_model_len = min(max_model_len or spec.max_position_embeddings, spec.max_position_embeddings)
        cache_dtype = _kv_cache_dtype(kv_cache_dtype, spec.dtype)
        if num_kv_blocks is None:
            budget = kv_cache_memory if kv_cache_memory is not None else default_kv_budget(
                self.device, memory_fraction
            )
            bytes_per_token = spec.kv_bytes_per_token // spec.dtype.itemsize * cache_dtype.itemsize
            num_kv_blocks = num_blocks_for_budget(budget, block_size, bytes_per_token)
        if num_kv_blocks < 1:
            raise ValueError(f"the KV-cache budget holds no block of {block_size} tokens")
        if cache_dtype != spec.dtype and kernels == "auto" and self.device.type == "cpu":
            kernels = "torch"  # the C++ decode kernel reads caches of the model's dtype only
        self.kernels = _choose_kernels(kernels, self.device)
        self.block_manager = BlockManager(num_kv_blocks, block_size, enable_prefix_caching)
        self.scheduler = Scheduler(
            SchedulerConfig(
                max_num_seqs=max_num_seqs,
                max_num_batched_tokens=max_num_batched_tokens,
                max_model_len=self.max_model_len,
                enable_chunked_prefill=enable_chunked_prefill,
                image_row_fraction=image_row_fraction,
            ),
            self.block_manager,
        )
        caches = allocate_kv_caches(
            spec.num_layers, num_kv_blocks, block_size, spec.num_kv_heads, spec.head_dim, cache_dtype, self.device
        )
        self.runner = ModelRunner(self.model, caches, block_size, kernels=self.kernels)
        self.prompts = PromptProcessor(self.spec, self.tokenizer, self.model.preprocess_images, model_path,
                                       prompt_format=getattr(self.model, "prompt_format", None))
        self._seed_stream = random.Random(seed)
        self._pending: dict[int, Request] = {}
        self._rejected: list[TextOutput | ImageOutput] = []  # requests that failed validation, answered at run()
        self.stats = EngineStats()

    # ---- submission -----------------------------------------------------------------------------
    def _seed(self, seed: int | None) -> int:
        return seed if seed is not None else self._seed_stream.getrandbits(62)

    def _check_fits(self, request: Request) -> None:
        if request.max_rows() > self.scheduler.config.max_num_seqs:
            raise RequestError(
                f"request needs {request.max_rows()} rows but max_num_seqs is {self.scheduler.config.max_num_seqs}"
            )
        need = self.scheduler.worst_case_blocks(request)
        if need > self.block_manager.num_blocks:
            raise RequestError(
                f"request needs up to {need} KV blocks but the pool has {self.block_manager.num_blocks}; "
                "raise num_kv_blocks / kv_cache_memory or lower n"
            )

    def submit_text(self, prompt, params: SamplingParams | None = None) -> int:
        """Queues a text request; returns its id (results come from :meth:`run`)."""
        params = params or SamplingParams()
        try:
            ids, images = self.prompts.text(prompt)
            if len(ids) >= self.max_model_len:
                raise RequestError(
                    f"prompt has {len(ids)} tokens but the context is {self.max_model_len} tokens "
                    "(no room to generate)"
                )
            max_out = min(params.max_tokens, self.max_model_len - len(ids))
            row = Sequence(ids, images=images, output_kind="text")
            request = Request(RequestKind.TEXT, params, self._seed(params.seed), [row], max_out)
            request.eos_token_ids = () if self.spec.eos_token_id is None else (self.spec.eos_token_id,)
            attach_text_hooks(request, self.tokenizer, self.spec.text_vocab_size)
            self._check_fits(request)
        except RequestError as err:
            return self._reject(RequestKind.TEXT, params, str(err))
        return self._enqueue(request)

    def submit_image(self, prompt, params: ImageGenParams | None = None) -> int:
        """Queues an image request (n images, CFG as a group of rows); returns its id."""
        params = params or ImageGenParams()
        try:
            ids = self.prompts.image(prompt)
            if len(ids) + self.spec.num_image_tokens > self.max_model_len:
                raise RequestError(
                    f"prompt has {len(ids)} tokens; with {self.spec.num_image_tokens} image tokens that exceeds "
                    f"the context of {self.max_model_len} tokens"
                )
            rows = [Sequence(ids, output_kind="image")]
            if params.cfg_scale != 1.0:  # at scale 1 the guided logits are the conditional ones
                rows.append(Sequence(self.prompts.unconditional(ids), is_uncond=True, output_kind="image"))
            request = Request(RequestKind.IMAGE, params, self._seed(params.seed), rows, self.spec.num_image_tokens)
            self._check_fits(request)
        except RequestError as err:
            return self._reject(RequestKind.IMAGE, params, str(err))
        return self._enqueue(request)

    def _enqueue(self, request: Request) -> int:
        self.scheduler.add_request(request)
        self._pending[request.request_id] = request
        return request.request_id

    def _reject(self, kind: RequestKind, params, reason: str) -> int:
        output_type = TextOutput if kind is RequestKind.TEXT else ImageOutput
        output = output_type(new_request_id(), prompt_token_ids=[], error=reason)
        self._rejected.append(output)
        return output.request_id

    # ---- running --------------------------------------------------------------------------------
    def step(self) -> list[Request]:
        """Runs one scheduled step; returns the requests that finished in it."""
        out = self.scheduler.schedule()
        if out.is_empty:
            if self.scheduler.running or self.scheduler.waiting:
                raise RuntimeError(
                    f"scheduler made no progress with {len(self.scheduler.running)} running and "
                    f"{len(self.scheduler.waiting)} waiting requests"
                )
            return []
        sampled = self.runner.execute(out)
        finished = self.scheduler.update(out, sampled)
        for request in finished:
            self.runner.release_images(request)
        self.stats.num_steps += 1
        self.stats.num_batched_tokens += out.num_batched_tokens
        self.stats.num_preemptions = self.scheduler.num_preemptions
        self.stats.prefix_hit_tokens = self.block_manager.num_prefix_hit_tokens
        self.stats.prefix_query_tokens = self.block_manager.num_prefix_query_tokens
        return finished

    def run(self, progress: bool = False) -> dict[int, TextOutput | ImageOutput]:
        """Runs every queued request to completion; returns outputs by request id."""
        results: dict[int, TextOutput | ImageOutput] = {}
        for output in self._rejected:
            results[output.request_id] = output
        self._rejected.clear()
        total = len(self._pending)
        start = time.perf_counter()
        while self.scheduler.has_unfinished():
            for request in self.step():
                results[request.request_id] = self._output(request)
                del self._pending[request.request_id]
                if progress:
                    done = total - len(self._pending)
                    rate = done / max(time.perf_counter() - start, 1e-9)
                    print(f"\r[unicorn] {done}/{total} requests, {rate:.2f} req/s", end="", file=sys.stderr)
        if progress and total:
            print(file=sys.stderr)
        self.stats.elapsed_s += time.perf_counter() - start
        return results

    def generate(self, prompts, params: SamplingParams | None = None, progress: bool = False) -> list[TextOutput]:
        """Generates text for each prompt (a str, token ids, or chat messages with images); order is kept."""
        single = isinstance(prompts, (str, dict)) or (
            isinstance(prompts, list) and prompts and all(isinstance(t, int) for t in prompts)
        )
        prompts = [prompts] if single else list(prompts)
        ids = [self.submit_text(p, params) for p in prompts]
        results = self.run(progress)
        return [results[i] for i in ids]

    def generate_images(self, prompts, params: ImageGenParams | None = None, progress: bool = False) -> list[ImageOutput]:
        """Draws ``params.n`` images per prompt (a str, or token ids ending in <begin_of_image>); order is kept."""
        single = isinstance(prompts, str) or (
            isinstance(prompts, list) and prompts and all(isinstance(t, int) for t in prompts)
        )
        prompts = [prompts] if single else list(prompts)
        ids = [self.submit_image(p, params) for p in prompts]
        results = self.run(progress)
        return [results[i] for i in ids]

    # ---- outputs --------------------------------------------------------------------------------
    def _output(self, request: Request) -> TextOutput | ImageOutput:
        prompt_ids = request.rows[0].token_ids[: request.rows[0].num_prompt_tokens]
        if request.kind is RequestKind.TEXT:
            out = TextOutput(request.request_id, prompt_ids, num_cached_tokens=request.rows[0].num_cached_tokens)
            for i in range(request.n):
                tokens = request.sample_rows(i)[0].output_token_ids
                text = None if self.tokenizer is None else self.tokenizer.decode(
                    tokens, skip_special_tokens=request.params.skip_special_tokens)
                if text is not None and request.params.stop:
                    text = truncate_at_stop(text, request.params.stop, request.params.include_stop_str_in_output)
                out.samples.append(TextSample(text, tokens, request.finish_reasons[i],
                                              logprobs=request.sample_logprobs[i] if request.sample_logprobs else None))
            if request.params.prompt_logprobs is not None:
                records = request.rows[0].prompt_logprob_records
                out.prompt_logprobs = [records.get(p) for p in range(len(prompt_ids))]
            return out
        codes = torch.tensor([request.sample_rows(i)[0].output_token_ids for i in range(request.n)])
        images = self.model.postprocess(self.runner.decode_images(codes))
        return ImageOutput(request.request_id, prompt_ids, images, codes,
                           num_cached_tokens=request.rows[0].num_cached_tokens)

    # ---- candidate strings (text helper) -------------------------------------------------------------
    def candidate_logprobs(self, prompt, candidates) -> list[float]:
        """``log P(candidate | prompt)`` for each candidate (a string, or token ids), under the raw distribution.

        ``prompt`` is anything :meth:`submit_text` takes. Each candidate is tokenized on its own (no BOS) and
        teacher-forced after the prompt: its logprob is the sum of its tokens' prompt logprobs. The prompt is
        computed once: the first candidate computes it, the others reuse its blocks through the prefix cache
        (only the prompt's last partial block is recomputed). See :func:`unicorn.engine.logprobs.expected_value`.

        Mind the prefix problem: ``P("1")`` also counts every continuation such as ``"10"``. To score a choice
        among candidates, end each with what must follow it (e.g. ``'1"'`` or ``"1\\n"`` after ``"score": ``), so
        no candidate is a prefix of another. Runs the engine until its own requests finish, so call it with no
        other request in flight (it raises RuntimeError otherwise).
        """
        if self.scheduler.has_unfinished():
            raise RuntimeError("candidate_logprobs needs an idle engine (other requests are in flight)")
        prompt_ids, images = self.prompts.text(prompt)
        targets: list[list[int]] = []
        for c in candidates:
            if isinstance(c, str):
                if self.tokenizer is None:
                    raise RequestError("candidates given as strings need a tokenizer; pass token ids")
                c = self.tokenizer.encode(c, add_bos=False)
            if not c:
                raise RequestError("candidates must be non-empty")
            targets.append([int(t) for t in c])
            if len(prompt_ids) + len(c) >= self.max_model_len:
                raise RequestError(f"prompt and candidate take {len(prompt_ids) + len(c)} tokens; the context "
                                   f"is {self.max_model_len}")
        params = SamplingParams(max_tokens=1, temperature=0.0, prompt_logprobs=0)
        requests: list[Request] = []

        def run_until_done() -> None:
            while not all(r.is_finished for r in requests):
                self.step()
            for r in requests:
                self._pending.pop(r.request_id, None)

        for k, ids in enumerate(targets):
            row = Sequence(prompt_ids + ids, images=images, output_kind="text")
            row.prompt_logprobs, row.max_cached_tokens = 0, len(prompt_ids) - 1  # the candidate's positions run
            request = Request(RequestKind.TEXT, params, 0, [row], 1)
            self._check_fits(request)
            self._enqueue(request)
            requests.append(request)
            if k == 0:  # computes the shared prompt; the others then hit its cached blocks
                run_until_done()
        run_until_done()
        num_prompt = len(prompt_ids)
        return [
            sum(r.rows[0].prompt_logprob_records[p].logprob for p in range(num_prompt, num_prompt + len(ids)))
            for r, ids in zip(requests, targets)
        ]
