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
        return JanusForConditionalGeneration.from_pretrained(path, dtype=dtype).to(device).eval()
    from unicorn.models.janus_checkpoint import hf_key_to_name
    from unicorn.models.janus_tiny import fill_random_

    with torch.device(device):
        model = JanusForConditionalGeneration._from_config(AutoConfig.from_pretrained(path), dtype=dtype)
    for key, p in model.named_parameters():
        (name, _), = hf_key_to_name(key, p)
        fill_random_(name, p, seed)
    return model.eval()


class TransformersJanus:
    """Times ``generate(generation_mode="image")`` with CFG 5, temperature 1, ``rollouts`` return sequences."""

    def __init__(self, path: str, device: str, dtype: torch.dtype, weights: str, rollouts: int):
        from transformers import GenerationConfig

        self.path, self.device, self.rollouts = path, device, rollouts
        self.model = build_transformers_janus(path, device, dtype, weights)
        self.pad = GenerationConfig.from_pretrained(path).pad_token_id
        self._timed: dict[tuple[str, int], tuple[float, Monitor]] = {}

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

    def warm_up(self, prompt_ids: list[int]) -> None:
        """The engine's warm-up: one image of the first prompt, generated and decoded."""
        codes = self._generate([prompt_ids], 1)  # [1, num_image_tokens]
        with torch.no_grad():
            self.model.decode_image_tokens(codes)
        sync(self.device)

    def time(self, prompt_ids: list[list[int]], mode: str, hf_prompts: int) -> tuple[float, int, int, Monitor]:
        """(seconds for all of ``prompt_ids``, prompts timed, generate calls for all, monitor of the timed part):
        ``batched`` runs the first ``hf_prompts`` (0: all) prompts in one call, ``per-prompt`` one call per prompt;
        the time is scaled to all prompts. A count already timed in this mode is not timed again."""
        count = min(len(prompt_ids), hf_prompts or len(prompt_ids))
        if (mode, count) not in self._timed:
            with Monitor(self.device) as monitor:
                if mode == "batched":
                    self._generate(prompt_ids[:count], self.rollouts)
                else:
                    for ids in prompt_ids[:count]:
                        self._generate([ids], self.rollouts)
            self._timed[(mode, count)] = (monitor.seconds, monitor)
        seconds, monitor = self._timed[(mode, count)]
        calls = len(prompt_ids) if mode == "per-prompt" else -(-len(prompt_ids) // count)
        return seconds * len(prompt_ids) / count, count, calls, monitor

    def decode_s(self, codes: torch.Tensor, timed: int, scale_to: int) -> float:
        """Seconds of decode_image_tokens on the first ``timed`` codes (the engine's chunks of 8), scaled."""
        codes = codes[:timed].to(self.device)
        with Monitor(self.device) as monitor, torch.no_grad():
            for i in range(0, len(codes), 8):
                self.model.decode_image_tokens(codes[i : i + 8])
        return monitor.seconds * scale_to / len(codes)
