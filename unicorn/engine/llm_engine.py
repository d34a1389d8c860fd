"""The public engine: load a checkpoint, then generate text or images with continuous batching."""
from __future__ import annotations

import os
import random
import sys
import time
import weakref
from dataclasses import dataclass

import torch

from unicorn.engine.block_manager import BlockManager
from unicorn.engine.kv_cache import (allocate_kv_caches, default_kv_budget, num_blocks_for_budget,
                                     populate_kv_caches)
from unicorn.engine.host_malloc import keep_freed_host_memory
from unicorn.engine.image_decoder import ImageDecoder
from unicorn.engine.model_runner import ModelRunner
from unicorn.engine.outputs import ImageOutput, TextOutput, TextSample
from unicorn.engine.params import ImageGenParams, SamplingParams
from unicorn.engine.scheduler import Scheduler, SchedulerConfig
from unicorn.engine.prompts import PromptProcessor, RequestError
from unicorn.engine.sampler import sample_seed
from unicorn.engine.sequence import Request, RequestKind, Sequence, new_request_id
from unicorn.engine.stop import truncate_at_stop
from unicorn.engine.text_hooks import attach_text_hooks
from unicorn.kernels.cpu_linear import release_packed_weights


@dataclass
class EngineStats:
    num_steps: int = 0
    num_batched_tokens: int = 0
    num_preemptions: int = 0
    prefix_hit_tokens: int = 0
    prefix_query_tokens: int = 0
    elapsed_s: float = 0.0
    kv_populate_s: float = 0.0  # start-up and wake-up time spent writing the KV pool's pages (populate_kv_cache)


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
        overlap_decode: VQ-decode finished images on a worker thread (a CUDA side stream on a GPU) while
            tokens keep coming; False decodes inside the step loop. The images finished in one step are decoded
            as one batch either way, so outputs are identical. An image output comes from :meth:`step` once its
            pixels exist (``ImageGenParams(decode=False)`` skips decoding: codes only).
        decode_threads: torch threads of the decode worker (None: torch's default).
        cfg_head_mix: apply CFG to the input of the image head's last linear layer (models that expose it, as
            Janus) and run that layer once per image instead of on both rows: equal to mixing the logits in real
            arithmetic, differing by fp32 rounding (the greedy tests against transformers pin the tokens).
            False mixes the logits.
        populate_kv_cache: on a CPU, write every page of the KV pool at start-up (and at :meth:`wake_up`) instead
            of when a block is first used: the whole pool then takes RAM at once, and start-up takes the time to
            zero it (0.3 s per GiB here, up to ~5 s per GiB in a VM whose host backs memory on first touch; in
            ``stats.kv_populate_s``), which the steps of the first pass through the pool otherwise pay as page
            faults (15-25 % of janus-mid's 8 x 8 decode step here). For long runs and benchmarks.
        tune_host_malloc: on a CPU with glibc, set malloc (process-wide, once) to serve blocks up to 32 MiB from
            the heap and keep freed heap memory mapped (unicorn/engine/host_malloc.py): VQ decoding then reuses
            pages instead of faulting ~160 MB in per image (0.30 against 0.37 s per janus-mid image here). The
            process's resident memory stays at its peak.

    Call :meth:`close` (or use the engine as a context manager) to stop the decode worker; it is a daemon
    thread, also stopped when the engine is collected or at exit.
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
        overlap_decode: bool = True,
        decode_threads: int | None = None,
        cfg_head_mix: bool = True,
        populate_kv_cache: bool = False,
        tune_host_malloc: bool = True,
        model=None,
        tokenizer=None,
    ) -> None:
        from unicorn.models import load_model, load_tokenizer

        for name, flag in (("cfg_head_mix", cfg_head_mix), ("overlap_decode", overlap_decode),
                           ("populate_kv_cache", populate_kv_cache), ("tune_host_malloc", tune_host_malloc)):
            if not isinstance(flag, bool):  # before any loading: a bad flag costs nothing
                raise ValueError(f"{name} must be True or False, got {flag!r}")
        self.model_path = model_path
        self.device = torch.device(device)
        if tune_host_malloc and self.device.type == "cpu":
            keep_freed_host_memory()
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
        self.runner = ModelRunner(self.model, caches, block_size, kernels=self.kernels, cfg_head_mix=cfg_head_mix)
        self.prompts = PromptProcessor(self.spec, self.tokenizer, self.model.preprocess_images, model_path,
                                       prompt_format=getattr(self.model, "prompt_format", None),
                                       image_token_count=getattr(self.model, "image_token_count", None),
                                       image_block_margin=getattr(self.model, "image_block_margin", None))
        self._seed_stream = random.Random(seed)
        self._pending: dict[int, Request] = {}
        self._finished: dict[int, TextOutput | ImageOutput] = {}  # final outputs not yet returned (rejected too)
        self._fresh: set[int] = set()  # text requests that received tokens since step() last returned
        self._delivered: dict[int, list[int]] = {}  # text request -> tokens per sample already returned
        self.stats = EngineStats()
        self.populate_kv_cache = populate_kv_cache
        self._populate_kv_pool()
        self._sleep_level = 0  # 0 awake; 1 or 2 as in sleep()
        self._weights_dir = model_path if model is None else None  # what wake_up() reloads after sleep(level=2)
        self.decoder = ImageDecoder(self.runner.decode_images, overlap=overlap_decode, num_threads=decode_threads,
                                    device=self.device)
        self._decoding: dict[int, ImageOutput] = {}  # image outputs waiting for their pixels
        self._to_decode: list[ImageOutput] = []  # finished in this step, handed to the decoder as one batch
        self._flow_decode: dict = {}  # flow request id -> its FlowLatents, while in _to_decode
        weakref.finalize(self, self.decoder.close)

    def close(self) -> None:
        """Stops the image decode worker (images still decoding are lost). Idempotent."""
        self.decoder.close()

    def __enter__(self) -> "Engine":
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    # ---- weights between rounds: update_weights, sleep, wake_up ---------------------------------------------
    def update_weights(self, weights) -> None:
        """Loads new weights into the running engine, in place.

        ``weights``: a checkpoint directory (what ``unicorn train --export`` writes, or any layout the loader reads:
        transformers' Janus layout, DeepSeek's original one), or a state dict keyed by the model's parameter names
        (``engine.model.state_dict()``, ``Trainer.full_janus_state_dict()``); a state dict may leave out the model's
        frozen modules (Janus: the VQ codec), which keep their values. Every name and shape is checked before
        anything is copied: a bad source raises ``CheckpointError`` (one line naming the first unknown or missing
        tensor, or the shape mismatch) and the engine keeps its weights. Copies go into the existing tensors (cast
        to their dtype and device), so kernels and graphs keep their pointers. Config, special ids and tokenizer
        stay those the engine was built with.

        Everything computed from the old weights is dropped: the prefix cache (no later request reuses a KV block
        computed before) and the runner's cache of image features. Refused while a request is queued or running.
        Allowed while asleep at level 1 (the copy goes into the host copies, which wake_up() brings back); after
        ``sleep(level=2)`` pass the weights to :meth:`wake_up` instead.
        """
        from unicorn.models.weight_update import load_weights_in_place

        self._check_idle("update_weights")
        if self._sleep_level == 2:
            raise RuntimeError("update_weights: the engine is asleep at level 2 (weights discarded); "
                               "call wake_up(weights=...) instead")
        load_weights_in_place(self.model, weights)
        self._weights_dir = os.fspath(weights) if isinstance(weights, (str, os.PathLike)) else None
        self._drop_weight_dependent_caches()

    def sleep(self, level: int = 1) -> None:
        """Releases the engine's device memory between rounds (e.g. while a trainer uses the GPU).

        Both levels free the KV pool (its tensors are dropped; the prefix cache is reset, as its blocks' content is
        gone) and the cached image features. Level 1 also moves the weights to host memory (pinned on CUDA; on a
        CPU engine they stay where they are), level 2 discards them (but for the model's frozen modules, e.g. Janus'
        VQ codec, which go to host memory, as a trainer's state dict leaves them out). On CUDA the freed memory is handed back to the
        driver (``torch.cuda.empty_cache``). Refused while a request is queued or running; while asleep, submitting
        and stepping raise. See :meth:`wake_up`.
        """
        from unicorn.engine.device_memory import discard_loadable, offload_to_host, release_cached_device_memory

        if level not in (1, 2):
            raise ValueError(f"sleep level must be 1 (weights to host memory) or 2 (weights discarded), got {level!r}")
        if self._sleep_level:
            raise RuntimeError(f"the engine is already asleep (level {self._sleep_level}); call wake_up() first")
        self._check_idle("sleep")
        caches = self.runner.kv_caches
        self._kv_layout = (len(caches), tuple(caches[0].key.shape), caches[0].key.dtype,
                           [(c.k_scale, c.v_scale) for c in caches])
        self.runner.kv_caches = []
        del caches
        self._drop_weight_dependent_caches()
        if level == 1:
            offload_to_host(self.model)
        else:
            discard_loadable(self.model, keep_modules=getattr(self.model, "frozen_modules", ()))
        self._sleep_level = level
        release_cached_device_memory(self.device)

    def wake_up(self, weights=None) -> None:
        """Re-acquires what :meth:`sleep` released: a KV pool of the same size (empty, with no cached prefix) and
        the weights on the device.

        After level 1 the weights come back from host memory; ``weights``, if given, is loaded first (as
        :meth:`update_weights`). After level 2 ``weights`` (a checkpoint directory or a state dict, as
        :meth:`update_weights` takes) is loaded, by default the directory the engine last loaded (``model_path`` or
        the last ``update_weights`` directory; a state dict is not kept, so after one ``weights`` is required).
        It is checked before any memory is allocated: a bad source raises and the engine stays asleep.
        """
        from unicorn.engine.device_memory import restore_to_device
        from unicorn.models.weight_update import prepare_weight_update

        if not self._sleep_level:
            raise RuntimeError("wake_up: the engine is not asleep")
        if self._sleep_level == 1:
            if weights is not None:
                self.update_weights(weights)
            restore_to_device(self.model, self.device)
        else:
            source = weights if weights is not None else self._weights_dir
            if source is None:
                raise ValueError("wake_up after sleep(level=2) needs weights=: the engine's last weights came from a "
                                 "state dict or a model object, which it does not keep")
            load = prepare_weight_update(self.model, source)  # checks names and shapes against the meta tensors
            restore_to_device(self.model, self.device)
            load()
            self._weights_dir = os.fspath(source) if isinstance(source, (str, os.PathLike)) else None
        num_layers, shape, dtype, scales = self._kv_layout
        caches = allocate_kv_caches(num_layers, shape[0], shape[1], shape[2], shape[3], dtype, self.device)
        for cache, (k_scale, v_scale) in zip(caches, scales):
            cache.k_scale, cache.v_scale = k_scale, v_scale
        self.runner.kv_caches = caches
        self._populate_kv_pool()
        self._sleep_level = 0

    def _populate_kv_pool(self) -> None:
        if self.populate_kv_cache:
            start = time.perf_counter()
            populate_kv_caches(self.runner.kv_caches)
            self.stats.kv_populate_s += time.perf_counter() - start

    def reset_prefix_cache(self) -> None:
        """Forgets every cached prefix (the blocks stay allocated to no one, free), so that later requests compute
        their prompts as on a fresh engine. Refused while a request is queued or running."""
        self._check_idle("reset_prefix_cache")
        self.block_manager.reset_prefix_cache()

    def reseed(self, seed: int) -> None:
        """Restarts the stream that seeds requests given no seed of their own, as ``Engine(..., seed=seed)`` starts
        it: with :meth:`reset_prefix_cache`, an engine kept between stages then answers as a fresh one would."""
        self._seed_stream = random.Random(seed)

    @property
    def sleep_level(self) -> int:
        """0 when awake, else the level :meth:`sleep` was called with."""
        return self._sleep_level

    def _check_awake(self) -> None:
        if self._sleep_level:
            raise RuntimeError(f"the engine is asleep (level {self._sleep_level}): call wake_up() before submitting "
                               "or stepping")

    def _check_idle(self, action: str) -> None:
        if self.scheduler.has_unfinished():
            raise RuntimeError(
                f"{action} needs an idle engine: {len(self.scheduler.running)} running and "
                f"{len(self.scheduler.waiting)} waiting requests (run them to completion or abort them first)"
            )
        # Images still decoding read the codec's weights: let them finish (their outputs wait for step()).
        self._collect_decoded(block=True)

    def _drop_weight_dependent_caches(self) -> None:
        self.block_manager.reset_prefix_cache()
        self.runner.encoder_cache.clear()
        release_packed_weights(self.model)

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

    def _check_blocks_fit(self, row: Sequence) -> None:
        """A bidirectional block runs in one step, so it must fit the step's token budget."""
        budget = self.scheduler.config.max_num_batched_tokens
        for a, b in row.spans:
            if b - a > budget:
                raise RequestError(f"an image block of {b - a} tokens exceeds max_num_batched_tokens={budget} "
                                   "(it is computed in one step): raise max_num_batched_tokens")

    def submit_text(self, prompt, params: SamplingParams | None = None, *, priority: int = 0) -> int:
        """Queues a text request; returns its id (outputs come from :meth:`step` or :meth:`run`).

        ``priority``: lower runs first, ties by arrival (as in vLLM); the scheduler still keeps the image seat
        share and its anti-starvation bound (see :class:`~unicorn.engine.scheduler.Scheduler`)."""
        params = params or SamplingParams()
        _check_priority(priority)
        try:
            ids, images = self.prompts.text(prompt)
            if len(ids) >= self.max_model_len:
                raise RequestError(
                    f"prompt has {len(ids)} tokens but the context is {self.max_model_len} tokens "
                    "(no room to generate)"
                )
            max_out = min(params.max_tokens, self.max_model_len - len(ids))
            row = Sequence(ids, images=images, output_kind="text")
            self._check_blocks_fit(row)
            request = Request(RequestKind.TEXT, params, self._seed(params.seed), [row], max_out, priority=priority)
            request.eos_token_ids = () if self.spec.eos_token_id is None else (self.spec.eos_token_id,)
            attach_text_hooks(request, self.tokenizer, self.spec.text_vocab_size)
            self._check_fits(request)
        except RequestError as err:
            return self._reject(RequestKind.TEXT, params, str(err))
        return self._enqueue(request)

    def submit_image(self, prompt, params: ImageGenParams | None = None, *, priority: int = 0) -> int:
        """Queues an image request (n images, CFG as a group of rows); returns its id. ``priority`` as in
        :meth:`submit_text`."""
        params = params or ImageGenParams()
        _check_priority(priority)
        if getattr(self.model, "flow", None) is not None:
            return self._submit_flow(prompt, params, priority)
        try:
            ids = self.prompts.image(prompt)
            if len(ids) + self.spec.num_generated_image_tokens > self.max_model_len:
                raise RequestError(
                    f"prompt has {len(ids)} tokens; with {self.spec.num_generated_image_tokens} image tokens that exceeds "
                    f"the context of {self.max_model_len} tokens"
                )
            rows = [Sequence(ids, output_kind="image")]
            if params.uses_cfg:  # at scale 1 the guided logits are the conditional ones
                rows.append(Sequence(self.prompts.unconditional(ids), is_uncond=True, output_kind="image"))
            seed = self._seed(params.seed if params.seeds is None else params.seeds[0])  # a list: per image
            request = Request(RequestKind.IMAGE, params, seed, rows, self.spec.num_generated_image_tokens,
                              priority=priority)
            self._check_fits(request)
        except RequestError as err:
            return self._reject(RequestKind.IMAGE, params, str(err))
        return self._enqueue(request)

    def _submit_flow(self, prompt, params: ImageGenParams, priority: int) -> int:
        """A flow-matching model's image request (see unicorn.engine.flow): the prompt's context row, prefilled
        once for the n rollouts, then denoising steps batched with every other request's."""
        from unicorn.engine.flow import FlowState

        try:
            contexts, context_size = self.prompts.flow_contexts(prompt, self.model.flow)
            for ids, _ in contexts.values():
                if len(ids) >= self.max_model_len:
                    raise RequestError(f"prompt has {len(ids)} tokens but the context is {self.max_model_len} tokens")
            try:
                plan = (self.model.flow.plan(params, params.n) if context_size is None
                        else self.model.flow.plan(params, params.n, context_size))
            except ValueError as err:
                raise RequestError(str(err)) from None
            seed = self._seed(params.seed if params.seeds is None else params.seeds[0])
            seeds = params.seeds if params.seeds is not None else [sample_seed(seed, i) for i in range(params.n)]
            latents = [self.model.flow.initial_latents(plan, s) for s in seeds]
            rows = [Sequence(ids, images=images, output_kind="text") for ids, images in contexts.values()]
            request = Request(RequestKind.FLOW, params, seed, rows, 0, priority=priority)
            request.flow = FlowState(plan, latents, contexts={b: k for k, b in enumerate(contexts)})
            for row in rows:
                self._check_blocks_fit(request.flow.query_row(row, 0, "cond"))
                request.flow.query_rows.clear()
            self._check_fits(request)
        except RequestError as err:
            return self._reject(RequestKind.FLOW, params, str(err))
        return self._enqueue(request)

    def _enqueue(self, request: Request) -> int:
        self._check_awake()
        self.scheduler.add_request(request)
        self._pending[request.request_id] = request
        return request.request_id

    def _reject(self, kind: RequestKind, params, reason: str) -> int:
        self._check_awake()
        output_type = TextOutput if kind is RequestKind.TEXT else ImageOutput
        output = output_type(new_request_id(), prompt_token_ids=[], error=reason, finished=True)
        self._finished[output.request_id] = output
        return output.request_id

    # ---- running --------------------------------------------------------------------------------
    def step(self) -> list[TextOutput | ImageOutput]:
        """Runs one scheduled step and returns the outputs it produced (empty when nothing is queued).

        Returned are: a final output (``finished=True``) for each request that finished, rejected requests
        included (their ``error`` says why), and a partial output (``finished=False``) for each unfinished text
        request that received tokens. Each text sample's ``new_token_ids`` holds the tokens since that request's
        previous output, so concatenating them gives ``token_ids``. Outputs of requests that finished while
        :meth:`generate` ran come from the next call. Image outputs come only when finished."""
        self._advance()
        outputs = list(self._finished.values())
        self._finished.clear()
        for request_id in self._fresh:
            request = self._pending.get(request_id)
            if request is not None:
                outputs.append(self._output(request, finished=False))
        self._fresh.clear()
        return outputs

    def has_unfinished(self) -> bool:
        """Whether a request is queued or running, or an output is waiting to be returned by :meth:`step`."""
        return self.scheduler.has_unfinished() or bool(self._finished) or self.decoder.num_pending > 0

    def abort(self, request_id: int) -> TextOutput | ImageOutput | None:
        """Stops a queued or running request now and frees its KV blocks.

        Returns its final output (``finished=True``): unfinished samples end with ``finish_reason`` "abort"; text
        keeps the tokens generated so far; an aborted image request has its codes so far and no pixels. Neither
        :meth:`step` nor :meth:`run` returns that request again. For an id the engine does not know, or one that
        was rejected or has already finished, it does nothing and returns None (an output not yet taken still
        comes from :meth:`step` / :meth:`run`)."""
        request = self.scheduler.abort(request_id)
        if request is None:
            return None
        self.runner.release_images(request)
        del self._pending[request_id]
        self._fresh.discard(request_id)
        return self._output(request)

    def _advance(self) -> None:
        """One scheduled step; the outputs of the requests that finish in it wait in ``_finished``."""
        self._check_awake()
        out = self.scheduler.schedule()
        if out.is_empty:
            if self.scheduler.running or self.scheduler.waiting:
                raise RuntimeError(
                    f"scheduler made no progress with {len(self.scheduler.running)} running and "
                    f"{len(self.scheduler.waiting)} waiting requests"
                )
            self._collect_decoded(block=True)  # nothing else to do: wait for the images in decoding
            return
        sampled = self.runner.execute(out)
        finished = self.scheduler.update(out, sampled)
        self._fresh.update(r.request_id for r in out.sampling_requests if r.kind is RequestKind.TEXT)
        for request in finished:
            self.runner.release_images(request)
            self._finished[request.request_id] = self._output(request)
            del self._pending[request.request_id]
        self._decode_finished()
        self.stats.num_steps += 1
        self.stats.num_batched_tokens += out.num_batched_tokens
        self.stats.num_preemptions = self.scheduler.num_preemptions
        self.stats.prefix_hit_tokens = self.block_manager.num_prefix_hit_tokens
        self.stats.prefix_query_tokens = self.block_manager.num_prefix_query_tokens

    def run(self, progress: bool = False) -> dict[int, TextOutput | ImageOutput]:
        """Steps until every queued request finishes; returns the final outputs by request id (those of
        requests that finished earlier, e.g. while :meth:`generate` ran, and rejected ones included)."""
        total = len(self._pending) + len(self._finished)
        results: dict[int, TextOutput | ImageOutput] = {}
        start = time.perf_counter()
        while self.has_unfinished():
            results.update((o.request_id, o) for o in self.step() if o.finished)
            if progress:
                rate = len(results) / max(time.perf_counter() - start, 1e-9)
                print(f"\r[unicorn] {len(results)}/{total} requests, {rate:.2f} req/s", end="", file=sys.stderr)
        if progress and total:
            print(file=sys.stderr)
        self.stats.elapsed_s += time.perf_counter() - start
        return results

    def _run_until(self, ids: list[int], progress: bool) -> list[TextOutput | ImageOutput]:
        """Steps until the given requests finish and returns their outputs in order; the outputs of other
        requests that finish meanwhile stay for a later :meth:`run`."""
        start = time.perf_counter()
        while any(i not in self._finished for i in ids):
            self._advance()
            if progress:
                done = sum(i in self._finished for i in ids)
                rate = done / max(time.perf_counter() - start, 1e-9)
                print(f"\r[unicorn] {done}/{len(ids)} requests, {rate:.2f} req/s", end="", file=sys.stderr)
        if progress and ids:
            print(file=sys.stderr)
        self.stats.elapsed_s += time.perf_counter() - start
        return [self._finished.pop(i) for i in ids]

    def generate(self, prompts, params: SamplingParams | None = None, progress: bool = False) -> list[TextOutput]:
        """Generates text for each prompt (a str, token ids, or chat messages with images); order is kept.

        Runs only until these prompts finish: requests queued earlier with ``submit_*`` keep running in the same
        batches, and their outputs stay for a later :meth:`run`."""
        single = isinstance(prompts, (str, dict)) or (
            isinstance(prompts, list) and prompts and all(isinstance(t, int) for t in prompts)
        )
        prompts = [prompts] if single else list(prompts)
        return self._run_until([self.submit_text(p, params) for p in prompts], progress)

    def generate_images(self, prompts, params: ImageGenParams | None = None, progress: bool = False) -> list[ImageOutput]:
        """Draws ``params.n`` images per prompt (a str, or token ids ending in <begin_of_image>); order is kept.

        Like :meth:`generate`, runs only until these prompts finish."""
        single = isinstance(prompts, str) or (
            isinstance(prompts, list) and prompts and all(isinstance(t, int) for t in prompts)
        )
        prompts = [prompts] if single else list(prompts)
        return self._run_until([self.submit_image(p, params) for p in prompts], progress)

    # ---- outputs --------------------------------------------------------------------------------
    def _output(self, request: Request, finished: bool = True) -> TextOutput | ImageOutput:
        prompt_ids = request.rows[0].token_ids[: request.rows[0].num_prompt_tokens]
        reasons = request.finish_reasons or [None] * request.n
        if request.kind is RequestKind.TEXT:
            out = TextOutput(request.request_id, prompt_ids, num_cached_tokens=request.rows[0].num_cached_tokens,
                             finished=finished)
            delivered = self._delivered.setdefault(request.request_id, [0] * request.n)
            for i in range(request.n):
                tokens = _sample_tokens(request, i)
                text = None if self.tokenizer is None else self.tokenizer.decode(
                    tokens, skip_special_tokens=request.params.skip_special_tokens)
                if text is not None and request.params.stop:
                    text = truncate_at_stop(text, request.params.stop, request.params.include_stop_str_in_output)
                out.samples.append(TextSample(text, tokens, reasons[i], new_token_ids=tokens[delivered[i]:],
                                              logprobs=request.sample_logprobs[i] if request.sample_logprobs else None))
                delivered[i] = len(tokens)
            if finished:
                del self._delivered[request.request_id]
            if request.params.prompt_logprobs is not None:
                records = request.rows[0].prompt_logprob_records
                out.prompt_logprobs = [records.get(p) for p in range(len(prompt_ids))]
            return out
        if request.kind is RequestKind.FLOW:
            return self._flow_output(request, prompt_ids, reasons)
        codes = torch.tensor([_sample_tokens(request, i) for i in range(request.n)], dtype=torch.long)
        out = ImageOutput(request.request_id, prompt_ids, [], codes, num_cached_tokens=request.rows[0].num_cached_tokens,
                          finished=True, finish_reasons=list(reasons))
        if "abort" not in reasons and request.params.decode:
            self._to_decode.append(out)  # pixels come from the decoder (see _decode_finished)
        return out

    def _flow_output(self, request: Request, prompt_ids: list[int], reasons: list) -> ImageOutput:
        from unicorn.engine.flow import FlowLatents

        latents = torch.stack([x.to(self.device) for x in request.flow.latents])
        out = ImageOutput(request.request_id, prompt_ids, [], None, num_cached_tokens=request.rows[0].num_cached_tokens,
                          finished=True, finish_reasons=list(reasons), latents=latents)
        if "abort" not in reasons and request.params.decode:
            self._to_decode.append(out)
            self._flow_decode[request.request_id] = FlowLatents(request.flow.plan, latents)
        return out

    def _decode_finished(self) -> None:
        """Hands this step's finished images to the decoder as one batch; their outputs wait in ``_decoding``
        until the pixels exist (at once with ``overlap_decode=False``)."""
        jobs = [(out.request_id, out.image_tokens) for out in self._to_decode if out.request_id not in self._flow_decode]
        flow_jobs = [(out.request_id, self._flow_decode.pop(out.request_id)) for out in self._to_decode
                     if out.request_id in self._flow_decode]
        for out in self._to_decode:
            self._decoding[out.request_id] = self._finished.pop(out.request_id)
        self._to_decode.clear()
        self.decoder.submit(jobs)
        for job in flow_jobs:  # one batch each: flow images of different requests may differ in size
            self.decoder.submit([job])
        self._collect_decoded(block=False)

    def _collect_decoded(self, block: bool) -> None:
        for result in self.decoder.wait() if block else self.decoder.poll():
            out = self._decoding.pop(result.key)
            if result.error is not None:
                out.error = result.error
            else:
                out.pixel_values, out.images = result.pixels, self.model.postprocess(result.pixels)
            self._finished[out.request_id] = out


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
        for k, ids in enumerate(targets):
            row = Sequence(prompt_ids + ids, images=images, output_kind="text")
            row.prompt_logprobs, row.max_cached_tokens = 0, len(prompt_ids) - 1  # the candidate's positions run
            request = Request(RequestKind.TEXT, params, 0, [row], 1)
            self._check_fits(request)
            self._enqueue(request)
            requests.append(request)
            if k == 0:  # computes the shared prompt; the others then hit its cached blocks
                self._run_until([request.request_id], progress=False)
        self._run_until([r.request_id for r in requests[1:]], progress=False)
        num_prompt = len(prompt_ids)
        return [
            sum(r.rows[0].prompt_logprob_records[p].logprob for p in range(num_prompt, num_prompt + len(ids)))
            for r, ids in zip(requests, targets)
        ]


def _sample_tokens(request: Request, i: int) -> list[int]:
    """Sample i's output tokens (none before the fork: the first token creates the samples)."""
    return request.sample_rows(i)[0].output_token_ids if request.forked else []


def _check_priority(priority) -> None:
    if isinstance(priority, bool) or not isinstance(priority, int):
        raise ValueError(f"priority must be an integer (lower runs first), got {priority!r}")
