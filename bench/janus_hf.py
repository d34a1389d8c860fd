"""transformers' JanusForConditionalGeneration as a provider of bench/janus_images.py: built on the bench's device
with the engine's weights, warmed up as the engine is, timed on the same prompts.

On a GPU the 7B model is built there in its dtype and filled by name with the values the engine's model got
(``fill_random_``: per-name seeds), never through a weights file. ``hf_prompts`` caps the prompts of one timed
call (transformers keeps every row's KV for the whole call: 64 prompts x 8 rollouts x 2 rows do not fit an
H100), the time then scaled to the workload; the rows record it.
"""
from __future__ import annotations

import torch

from device_stats import Monitor, sync


def build_transformers_janus(path: str, device: str, dtype: torch.dtype, weights: str, seed: int = 0):
    from transformers import AutoConfig, JanusForConditionalGeneration

    if weights == "files":
        return _static_cache_compat(JanusForConditionalGeneration.from_pretrained(path, dtype=dtype).to(device).eval())
    from unicorn.models.janus_checkpoint import hf_key_to_name
    from unicorn.models.janus_tiny import fill_random_

    with torch.device(device):
        model = JanusForConditionalGeneration._from_config(AutoConfig.from_pretrained(path), dtype=dtype)
    model.to(device)  # a no-op where the device context was followed
    for key, p in model.named_parameters():
        (name, _), = hf_key_to_name(key, p)
        fill_random_(name, p, seed)
    return _static_cache_compat(model.eval())


def _static_cache_compat(model):
    """transformers 5.17 (the version on the lent GPU machines) calls ``_prepare_static_cache`` from Janus' image
    ``generate`` without the ``prefill_chunk_size`` its GenerationMixin requires, a TypeError; 5.24 passes
    generation_config's, None by default. Where the parameter has no default, give it that one."""
    import inspect

    param = inspect.signature(model._prepare_static_cache).parameters.get("prefill_chunk_size")
    if param is not None and param.default is inspect.Parameter.empty:
        original = model._prepare_static_cache

        def prepare(*args, prefill_chunk_size=None, **kwargs):
            return original(*args, prefill_chunk_size=prefill_chunk_size, **kwargs)

        model._prepare_static_cache = prepare
    return model


class TransformersJanus:
    """Times ``generate(generation_mode="image")`` with CFG 5, temperature 1, ``rollouts`` return sequences.

    The model is built and warmed up (as the engine: ``warm_n`` images of each of ``warm_prompts``, generated in one
    call and decoded) at the first timing that needs it, and freed by :meth:`release`, so that each engine of the
    run gets the device to itself. What was timed is kept (token generation by mode and prompts per call, decoding
    by image count): a later workload whose calls were timed already (chunks of ``hf_prompts``) reuses the time
    without the model."""

    def __init__(self, path: str, device: str, dtype: torch.dtype, weights: str, rollouts: int,
                 warm_prompts: list[list[int]], warm_n: int):
        from transformers import GenerationConfig

        self.path, self.device, self.dtype, self.weights, self.rollouts = path, device, dtype, weights, rollouts
        self.warm_prompts, self.warm_n = warm_prompts, warm_n
        self.pad = GenerationConfig.from_pretrained(path).pad_token_id
        self.model = None
        self._timed: dict[tuple[str, int], Monitor] = {}
        self._decoded: dict[int, float] = {}

    def _ready(self):
        if self.model is None:
            self.model = build_transformers_janus(self.path, self.device, self.dtype, self.weights)
            codes = self._generate(self.warm_prompts, self.warm_n)  # [images, num_image_tokens]
            with torch.no_grad():
                for i in range(0, len(codes), 8):  # the engine's chunks
                    self.model.decode_image_tokens(codes[i : i + 8])
            sync(self.device)
        return self.model

    def release(self) -> None:
        self.model = None

    def _config(self, n: int):
        from transformers import GenerationConfig

        cfg = GenerationConfig.from_pretrained(self.path)
        cfg.do_sample, cfg.temperature, cfg.top_k, cfg.top_p = True, 1.0, None, None
        cfg.guidance_scale = 5.0
        cfg.num_return_sequences = n
        return cfg

    @torch.no_grad()
    def _generate(self, prompt_ids: list[list[int]], n: int) -> torch.Tensor:
        width = max(len(ids) for ids in prompt_ids)  # left-padded
        x = torch.tensor([[self.pad] * (width - len(ids)) + ids for ids in prompt_ids], device=self.device)
        mask = torch.tensor([[0] * (width - len(ids)) + [1] * len(ids) for ids in prompt_ids], device=self.device)
        return self.model.generate(input_ids=x, attention_mask=mask, generation_mode="image",
                                   generation_config=self._config(n))

    def time(self, prompt_ids: list[list[int]], mode: str, hf_prompts: int) -> tuple[float, int, int, Monitor, bool]:
        """(seconds for all of ``prompt_ids``, prompts timed, generate calls for all, monitor of the timed part,
        whether it was timed now): ``batched`` runs the first ``hf_prompts`` (0: all) prompts in one call,
        ``per-prompt`` one call per prompt; the time is scaled to all prompts."""
        count = min(len(prompt_ids), hf_prompts or len(prompt_ids))
        fresh = (mode, count) not in self._timed
        if fresh:
            self._ready()
            with Monitor(self.device) as monitor:
                if mode == "batched":
                    self._generate(prompt_ids[:count], self.rollouts)
                else:
                    for ids in prompt_ids[:count]:
                        self._generate([ids], self.rollouts)
            self._timed[(mode, count)] = monitor
        monitor = self._timed[(mode, count)]
        calls = len(prompt_ids) if mode == "per-prompt" else -(-len(prompt_ids) // count)
        return monitor.seconds * len(prompt_ids) / count, count, calls, monitor, fresh

    def decode_s(self, codes: torch.Tensor, timed: int, scale_to: int) -> float:
        """Seconds of decode_image_tokens on the first ``timed`` codes (the engine's chunks of 8), scaled."""
        timed = min(timed, len(codes))
        if timed not in self._decoded:
            model = self._ready()
            codes = codes[:timed].to(self.device)
            with Monitor(self.device) as monitor, torch.no_grad():
                for i in range(0, len(codes), 8):
                    model.decode_image_tokens(codes[i : i + 8])
            self._decoded[timed] = monitor.seconds
        return self._decoded[timed] * scale_to / timed
