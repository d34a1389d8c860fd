"""Maps a checkpoint's config.json to the function that builds and loads its model, and to its key layout
(checkpoint key -> module parameter names), which loading new weights into a built model uses.

Entries name their loader by import path, so importing the registry (as the engine does) imports no model.
"""
from __future__ import annotations

import importlib
import os
from collections.abc import Callable

from unicorn.models.errors import CheckpointError

_LOADERS: dict[str, str] = {
    "janus": "unicorn.models.janus_checkpoint:load_janus_hf",
    "multi_modality": "unicorn.models.janus_checkpoint:load_janus_deepseek",
    "bagel": "unicorn.models.bagel_checkpoint:load_bagel",
}

# Layouts known by their files rather than by config.json's model_type (BAGEL's config.json is informative and
# may be absent or lack the key): model_type -> files that must all be present.
_LAYOUT_FILES: dict[str, tuple[str, ...]] = {
    "bagel": ("llm_config.json", "vit_config.json"),
}

# model_type -> ("module:key_to_name", "module:name_to_key" or None): the KeyMapper of unicorn.models.weights, and
# how to name a missing parameter in that layout's terms (None: by its module name).
_KEY_LAYOUTS: dict[str, tuple[str, str | None]] = {
    "janus": ("unicorn.models.janus_checkpoint:hf_key_to_name", "unicorn.models.janus_checkpoint:name_to_hf_key"),
    "multi_modality": ("unicorn.models.janus_checkpoint:deepseek_key_to_name", None),
    "bagel": ("unicorn.models.bagel_checkpoint:key_to_name", "unicorn.models.bagel_checkpoint:name_to_key"),
}


def detect_model_type(path: str) -> str | None:
    """The model_type of a directory recognised by its files (see _LAYOUT_FILES), else None."""
    for model_type, files in _LAYOUT_FILES.items():
        if all(os.path.exists(os.path.join(path, f)) for f in files):
            return model_type
    return None


def register_model(model_type: str, loader: str, key_to_name: str | None = None, name_to_key: str | None = None) -> None:
    """``loader`` is "module:function" taking (path, config, device=..., dtype=...) and returning the model;
    ``key_to_name`` ("module:function", a ``KeyMapper``) lets ``Engine.update_weights`` read that layout."""
    _LOADERS[model_type] = loader
    if key_to_name is not None:
        _KEY_LAYOUTS[model_type] = (key_to_name, name_to_key)


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


def _resolve(spec: str) -> Callable:
    module, function = spec.split(":")
    return getattr(importlib.import_module(module), function)


def resolve_key_layout(config: dict) -> tuple[Callable, Callable[[str], str]]:
    """(key_to_name, name_to_key) of the checkpoint layout named by config.json's ``model_type``."""
    model_type = config.get("model_type")
    if model_type not in _KEY_LAYOUTS:
        raise CheckpointError(
            f"model_type {model_type!r} in config.json has no registered key layout; known: {', '.join(sorted(_KEY_LAYOUTS))}"
        )
    key_to_name, name_to_key = _KEY_LAYOUTS[model_type]
    return _resolve(key_to_name), (_resolve(name_to_key) if name_to_key else (lambda name: name))
