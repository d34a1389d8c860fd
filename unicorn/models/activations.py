"""Activation names used in configs, mapped to torch functions."""
from __future__ import annotations

import functools

import torch
import torch.nn.functional as F

from unicorn.models.errors import CheckpointError

_ACTIVATIONS = {
    "gelu": F.gelu,  # exact erf GELU, as nn.GELU() in the original Janus code
    "gelu_pytorch_tanh": functools.partial(F.gelu, approximate="tanh"),
    "gelu_new": functools.partial(F.gelu, approximate="tanh"),
    "silu": F.silu,
    "quick_gelu": lambda x: x * torch.sigmoid(1.702 * x),
}


def get_activation(name: str):
    if name not in _ACTIVATIONS:
        raise CheckpointError(f"activation {name!r} is not supported; known: {', '.join(sorted(_ACTIVATIONS))}")
    return _ACTIVATIONS[name]
