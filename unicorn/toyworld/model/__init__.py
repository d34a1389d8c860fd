"""The toy-world Janus: a tiny Janus-Pro-architecture model pretrained on oracle-labelled toy-world data.

``default_model_path()`` is the shipped checkpoint (unicorn/assets/toyworld-janus), rebuilt by
``unicorn toyworld pretrain`` (unicorn/toyworld/pretrain.py) and measured by ``unicorn toyworld eval``.
"""
from __future__ import annotations

from pathlib import Path

ASSET_NAME = "toyworld-janus"


def default_model_path() -> Path:
    """The shipped checkpoint directory (engine layout: config.json, model.safetensors, tokenizer.json, ...)."""
    return Path(__file__).resolve().parents[2] / "assets" / ASSET_NAME
