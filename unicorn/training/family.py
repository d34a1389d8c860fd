"""What the trainer needs from a model family, and which family trains which checkpoint.

A family loads its model for training, builds its data stream, and names the loss terms its training module's
``forward(batch)`` returns as sums ([M] fp32). The trainer weights each term by its global token count over the
whole step (loss.py), so the loop, the backends and the checkpoints are the same for every family:

    terms                  names of the M summed terms (Janus: one per CPR kind; BAGEL: ce, mse)
    shown_terms            the terms the progress line prints
    metrics_noun           "kind" or "term": the metrics' keys (loss_per_kind, tokens_per_kind, ...)
    module                 the training module (parallelize.py applies freezing, checkpointing, FSDP2 to it)
    num_params             parameters in it; active_params: those one token runs through (MFU)
    weights()              [M] loss weight per term
    build_data(rank, world_size, log)   the rank's resumable stream of micro-batches
    counts(batch)          [M] float64 target tokens per term in a micro-batch
    num_tokens(batch)      non-padding tokens in a micro-batch
    meta()                 settings a resumed run must share (checked against the checkpoint)
    model_hash()           hash of the source checkpoint's configs
    state_prefix           the module's prefix in front of the model's own parameter names
    context_length(path)   (static) the checkpoint's LM context in tokens, read from its config alone
    ema_beside_raw         whether the layout keeps the EMA weights beside the raw ones (BAGEL: ema.safetensors)
    export(state, out_dir, ema)  writes the trained model in the engine's layout: ``state`` the full raw weights by
                           the model's names, ``ema`` the same with the moving average (trainer.py, ema.py) or None;
                           a layout without a place for both serves ``ema`` when given (``state`` is then None)
"""
from __future__ import annotations

import importlib

from unicorn.models.loader import read_config
from unicorn.training.config import ConfigError

FAMILIES: dict[str, str] = {
    "janus": "unicorn.training.janus_family:JanusFamily",
    "multi_modality": "unicorn.training.janus_family:JanusFamily",
    "bagel": "unicorn.training.bagel_family:BagelFamily",
}


def family_class(model_path: str):
    model_type = read_config(model_path).get("model_type")
    if model_type not in FAMILIES:
        raise ConfigError(f"--model {model_path}: model_type {model_type!r} cannot be trained yet; trainable: "
                          f"{', '.join(sorted(FAMILIES))}")
    module, name = FAMILIES[model_type].split(":")
    return getattr(importlib.import_module(module), name)


def context_length(model_path: str) -> int:
    """The context length in tokens of the checkpoint at ``model_path`` (its LM's max_position_embeddings)."""
    return family_class(model_path).context_length(model_path)
