"""Entry points the engine uses: ``load_model`` and ``load_tokenizer`` for a checkpoint directory."""
from __future__ import annotations

import json
import os

import torch

from unicorn.models.errors import CheckpointError
from unicorn.models.registry import detect_model_type, resolve_loader
from unicorn.models.tokenizer import Tokenizer


def read_config(path: str) -> dict:
    """config.json of ``path``; a layout known by its files (BAGEL's llm_config.json + vit_config.json) gets its
    model_type from them, whatever config.json says or whether it exists."""
    file = os.path.join(path, "config.json")
    if not os.path.isdir(path):
        raise CheckpointError(f"checkpoint directory {path!r} does not exist")
    detected = detect_model_type(path)
    if detected is not None:
        return {"model_type": detected}
    if not os.path.exists(file):
        raise CheckpointError(
            f"{path}: expected config.json, weights (model.safetensors[.index.json] or pytorch_model.bin[.index.json]) "
            f"and tokenizer.json; found: {', '.join(sorted(os.listdir(path))[:12]) or 'nothing'}"
        )
    try:
        with open(file) as f:
            return json.load(f)
    except json.JSONDecodeError as e:
        raise CheckpointError(f"{file} is not valid JSON: {e}") from None


def load_model(path: str, device: str | torch.device = "cpu", dtype: torch.dtype = torch.float32):
    """Builds the model named by ``path``/config.json and loads its weights; the model has a ``spec``."""
    config = read_config(path)
    return resolve_loader(config)(path, config, device=device, dtype=dtype)


def load_tokenizer(path: str) -> Tokenizer:
    return Tokenizer(path)
