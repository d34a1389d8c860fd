"""Maps a checkpoint's config.json to the function that builds and loads its model.

Entries name their loader by import path, so importing the registry (as the engine does) imports no model.
"""
from __future__ import annotations

import importlib
from collections.abc import Callable

from unicorn.models.errors import CheckpointError

_LOADERS: dict[str, str] = {
    "janus": "unicorn.models.janus_checkpoint:load_janus_hf",
    "multi_modality": "unicorn.models.janus_checkpoint:load_janus_deepseek",
}


def register_model(model_type: str, loader: str) -> None:
    """``loader`` is "module:function" taking (path, config, device=..., dtype=...) and returning the model."""
    _LOADERS[model_type] = loader


def supported_model_types() -> list[str]:
    return sorted(_LOADERS)


def resolve_loader(config: dict) -> Callable:
    model_type = config.get("model_type")
    if model_type not in _LOADERS:
        raise CheckpointError(
            f"unsupported model_type {model_type!r} in config.json; supported: {', '.join(supported_model_types())}"
        )
    module, function = _LOADERS[model_type].split(":")
    return getattr(importlib.import_module(module), function)
