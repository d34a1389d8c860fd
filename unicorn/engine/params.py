"""User-facing request parameters. Each validates itself, so bad input fails before any work starts."""
from __future__ import annotations

import json
from dataclasses import dataclass, field


def _check_common(owner: str, n: int, temperature: float, top_k: int, top_p: float, seed: int | None) -> None:
    if not isinstance(n, int) or n < 1:
        raise ValueError(f"{owner}.n must be an integer >= 1, got {n!r}")
    if temperature < 0:
        raise ValueError(f"{owner}.temperature must be >= 0 (0 means greedy), got {temperature!r}")
    if not isinstance(top_k, int) or top_k < 0:
        raise ValueError(f"{owner}.top_k must be an integer >= 0 (0 disables it), got {top_k!r}")
    if not 0.0 < top_p <= 1.0:
        raise ValueError(f"{owner}.top_p must be in (0, 1], got {top_p!r}")
    if seed is not None and (not isinstance(seed, int) or seed < 0):
        raise ValueError(f"{owner}.seed must be a non-negative integer or None, got {seed!r}")


@dataclass(frozen=True)
class SamplingParams:
    """Text generation settings. ``temperature == 0`` means greedy; ``top_k == 0`` and ``top_p == 1`` disable them.

    ``seed`` makes sampling reproducible and independent of what else is in the batch; without one, the engine
    draws a seed per request from its own seeded stream.

    ``stop``: strings that finish a sample once its decoded text (decoded as the output is, see
    ``skip_special_tokens``) contains one, matched across token boundaries; the sample's text is cut before
    the first stop string unless ``include_stop_str_in_output``. Its token ids keep every sampled token.
    Stop strings need a tokenizer.

    ``logprobs=k``: each generated token's log-probability and the ``k`` most likely ids ``{id: logprob}``
    (``TextSample.logprobs``). ``prompt_logprobs=k``: the same for every prompt token given its prefix
    (``TextOutput.prompt_logprobs``; ``0`` gives each token's own logprob only). Both are of the model's raw
    distribution: before temperature, top-k, top-p and any grammar mask (as vLLM's default). A request with
    ``prompt_logprobs`` computes its whole prompt (the prefix cache serves it nothing).

    ``json_schema`` (a dict or its JSON text): every sample is valid compact JSON for the schema; a sample
    finishes when its JSON is complete (a dict is kept as its JSON text). A sample that reaches ``max_tokens``
    first ends with ``finish_reason="length"`` and its text is cut: bound strings and arrays (``maxLength``,
    ``maxItems``) so that the longest valid output fits. Needs a tokenizer, an end-of-text id and xgrammar
    (``pip install 'unicorn-umm[structured]'``).
    """

    n: int = 1
    temperature: float = 1.0
    top_k: int = 0
    top_p: float = 1.0
    max_tokens: int = 256
    seed: int | None = None
    stop_token_ids: tuple[int, ...] = field(default_factory=tuple)
    ignore_eos: bool = False
    skip_special_tokens: bool = True
    stop: tuple[str, ...] = field(default_factory=tuple)
    include_stop_str_in_output: bool = False
    logprobs: int | None = None
    prompt_logprobs: int | None = None
    json_schema: dict | str | None = None

    def __post_init__(self) -> None:
        _check_common("SamplingParams", self.n, self.temperature, self.top_k, self.top_p, self.seed)
        if not isinstance(self.max_tokens, int) or self.max_tokens < 1:
            raise ValueError(f"SamplingParams.max_tokens must be an integer >= 1, got {self.max_tokens!r}")
        object.__setattr__(self, "stop_token_ids", tuple(int(t) for t in self.stop_token_ids))
        stop = (self.stop,) if isinstance(self.stop, str) else tuple(self.stop)
        if not all(isinstance(s, str) and s for s in stop):
            raise ValueError(f"SamplingParams.stop must be non-empty strings, got {self.stop!r}")
        object.__setattr__(self, "stop", stop)
        for name in ("logprobs", "prompt_logprobs"):
            k = getattr(self, name)
            if k is not None and (not isinstance(k, int) or isinstance(k, bool) or k < 0):
                raise ValueError(f"SamplingParams.{name} must be None or an integer >= 0, got {k!r}")
        if isinstance(self.json_schema, str):
            try:
                json.loads(self.json_schema)
            except ValueError as err:
                raise ValueError(f"SamplingParams.json_schema is not valid JSON: {err}") from None
        elif isinstance(self.json_schema, dict):  # kept as its JSON text: params stay hashable
            try:
                object.__setattr__(self, "json_schema", json.dumps(self.json_schema))
            except (TypeError, ValueError) as err:
                raise ValueError(f"SamplingParams.json_schema cannot be written as JSON: {err}") from None
        elif self.json_schema is not None:
            raise ValueError(f"SamplingParams.json_schema must be a dict, a JSON string or None, got "
                             f"{type(self.json_schema).__name__}")


_PER_SAMPLE = ("cfg_scale", "temperature", "top_k", "top_p", "seed", "cfg_img_scale", "cfg_renorm_min")
_FLOW_OPTIONAL = ("cfg_img_scale", "cfg_renorm_min")  # per-rollout fields that may be None (the model's default)


def _is_number(value) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool)


def _check_image_value(name: str, value) -> None:
    """One value of an ImageGenParams field (``name`` may carry an index, e.g. "cfg_scale[3]")."""
    field_name = name.split("[")[0]
    owner = f"ImageGenParams.{name}"
    if field_name in _FLOW_OPTIONAL and value is None and "[" not in name:
        return
    if field_name == "seed":
        if value is not None and (not isinstance(value, int) or isinstance(value, bool) or value < 0):
            raise ValueError(f"{owner} must be a non-negative integer or None, got {value!r}")
    elif field_name == "top_k":
        if not isinstance(value, int) or isinstance(value, bool) or value < 0:
            raise ValueError(f"{owner} must be an integer >= 0 (0 disables it), got {value!r}")
    elif not _is_number(value):
        raise ValueError(f"{owner} must be a number, got {value!r}")
    elif field_name in ("cfg_scale", "cfg_img_scale") and value < 0:
        raise ValueError(f"{owner} must be >= 0, got {value!r}")
    elif field_name == "cfg_renorm_min" and not 0.0 <= value <= 1.0:
        raise ValueError(f"{owner} must be in [0, 1], got {value!r}")
    elif field_name == "temperature" and value < 0:
        raise ValueError(f"{owner} must be >= 0 (0 means greedy), got {value!r}")
    elif field_name == "top_p" and not 0.0 < value <= 1.0:
        raise ValueError(f"{owner} must be in (0, 1], got {value!r}")


@dataclass(frozen=True)
class ImageGenParams:
    """Image generation settings: ``n`` images per prompt with classifier-free guidance ``cfg_scale``.

    Each image is one conditional row plus one unconditional row; the guided logits are
    ``uncond + cfg_scale * (cond - uncond)`` and the sampled token is appended to both rows.

    Per-rollout settings: ``cfg_scale``, ``temperature``, ``top_k``, ``top_p`` and ``seed`` each take a scalar
    (every image) or a list of ``n`` values (image ``i`` uses value ``i``; lists are stored as tuples). The
    prompt is still computed once and the ``n`` images fork from it. Image ``i`` then draws exactly what a
    separate ``n=1`` request with the same settings draws: with a seed list, image ``i`` is the ``n=1``
    request with ``seed=seed[i]`` (with one scalar seed, image ``i`` uses its own stream derived from the seed
    and ``i``). A scale of 1.0 uses the conditional logits, as an ``n=1`` request at scale 1.0 (which has no
    unconditional row) does; the request keeps unconditional rows when any scale differs from 1.0.

    ``decode=False`` skips the VQ decoder: the output carries ``image_tokens`` only (no pixels, no images).

    Flow-matching models (BAGEL; ``ImageOutput.latents`` holds the final latents): ``cfg_scale`` is the text
    CFG scale (official ``cfg_text_scale``; its default here stays 5.0, the official one is 4.0), ``temperature`` / ``top_k`` / ``top_p`` do not apply, and a seed
    draws the initial noise (image ``i``: ``seed[i]`` with a list, else ``(seed, i)``). The other fields are
    theirs, with None meaning the model's default (BAGEL: the official ``gen_image`` T2I defaults, see
    unicorn.models.bagel_flow.FlowParams): ``height`` / ``width`` in pixels, ``num_timesteps``,
    ``timestep_shift``, ``cfg_img_scale`` and ``cfg_renorm_min`` (a scalar or one value per image),
    ``cfg_interval`` ((low, high]: the times at which CFG applies) and ``cfg_renorm_type``.
    """

    n: int = 1
    cfg_scale: float | tuple[float, ...] = 5.0
    temperature: float | tuple[float, ...] = 1.0
    top_k: int | tuple[int, ...] = 0
    top_p: float | tuple[float, ...] = 1.0
    seed: int | None | tuple[int, ...] = None
    decode: bool = True
    height: int | None = None
    width: int | None = None
    num_timesteps: int | None = None
    timestep_shift: float | None = None
    cfg_img_scale: float | tuple[float, ...] | None = None
    cfg_interval: tuple[float, float] | None = None
    cfg_renorm_min: float | tuple[float, ...] | None = None
    cfg_renorm_type: str | None = None

    def __post_init__(self) -> None:
        if not isinstance(self.n, int) or isinstance(self.n, bool) or self.n < 1:
            raise ValueError(f"ImageGenParams.n must be an integer >= 1, got {self.n!r}")
        for name in _PER_SAMPLE:
            value = getattr(self, name)
            if isinstance(value, (list, tuple)):
                if len(value) != self.n:
                    raise ValueError(f"ImageGenParams.{name} has {len(value)} values but n is {self.n} "
                                     "(give one value, or one per image)")
                for i, item in enumerate(value):
                    if name == "seed" and item is None:
                        raise ValueError(f"ImageGenParams.seed[{i}] must be a non-negative integer, got None")
                    _check_image_value(f"{name}[{i}]", item)
                object.__setattr__(self, name, tuple(value))
            else:
                _check_image_value(name, value)
        if not isinstance(self.decode, bool):
            raise ValueError(f"ImageGenParams.decode must be True or False, got {self.decode!r}")
        for name in ("height", "width", "num_timesteps"):
            value = getattr(self, name)
            if value is not None and (not isinstance(value, int) or isinstance(value, bool) or value < 1):
                raise ValueError(f"ImageGenParams.{name} must be a positive integer or None, got {value!r}")
        if self.timestep_shift is not None and (not _is_number(self.timestep_shift) or self.timestep_shift <= 0):
            raise ValueError(f"ImageGenParams.timestep_shift must be a number > 0 or None, got {self.timestep_shift!r}")
        if self.cfg_interval is not None:
            interval = self.cfg_interval
            if (not isinstance(interval, (list, tuple)) or len(interval) != 2 or not all(map(_is_number, interval))
                    or interval[0] > interval[1]):
                raise ValueError(f"ImageGenParams.cfg_interval must be (low, high) with low <= high, got {interval!r}")
            object.__setattr__(self, "cfg_interval", (float(interval[0]), float(interval[1])))
        if self.cfg_renorm_type is not None and not isinstance(self.cfg_renorm_type, str):
            raise ValueError(f"ImageGenParams.cfg_renorm_type must be a string or None, got {self.cfg_renorm_type!r}")

    def value(self, name: str, i: int):
        """Image ``i``'s value of the per-rollout field ``name``."""
        value = getattr(self, name)
        return value[i] if isinstance(value, tuple) else value

    @property
    def seeds(self) -> tuple[int, ...] | None:
        """The per-image seeds when ``seed`` is a list, else None."""
        return self.seed if isinstance(self.seed, tuple) else None

    @property
    def uses_cfg(self) -> bool:
        """Whether any image is guided (a scale other than 1.0), so the request needs unconditional rows."""
        return any(self.value("cfg_scale", i) != 1.0 for i in range(self.n))
