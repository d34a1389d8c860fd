"""Writes a trained model in the engine's on-disk layout (transformers' Janus layout), atomically.

Everything but the weights is copied from the source checkpoint (config.json, generation_config.json, tokenizer and
preprocessor files); the weights are the trained state (transformers key names via ``name_to_hf_key``) plus the
frozen VQ codec, copied unchanged from the source checkpoint.
"""
from __future__ import annotations

import json
import os
import shutil

import torch

from unicorn.models.janus_checkpoint import hf_key_to_name, name_to_hf_key
from unicorn.models.weights import WEIGHT_LAYOUTS, find_weight_shards, iter_shard

_DTYPES = {"float32": torch.float32, "bfloat16": torch.bfloat16, "float16": torch.float16}
MAX_SHARD_BYTES = 4 << 30


def _is_weight_file(name: str) -> bool:
    return name in WEIGHT_LAYOUTS or name.endswith((".safetensors", ".bin"))


def source_dtype(source: str) -> torch.dtype:
    with open(os.path.join(source, "config.json")) as f:
        config = json.load(f)
    name = config.get("dtype") or config.get("torch_dtype") or (config.get("text_config") or {}).get("dtype")
    return _DTYPES.get(str(name).removeprefix("torch."), torch.float32)


def frozen_vq_tensors(source: str) -> dict[str, torch.Tensor]:
    """The VQ codec's tensors from the source checkpoint, by our module names."""
    out = {}
    for shard in find_weight_shards(source):
        for key, tensor in iter_shard(shard):
            mapped = hf_key_to_name(key, tensor) or []
            out.update({name: t for name, t in mapped if name.startswith("vqmodel.")})
    return out


def export_janus(state_dict: dict[str, torch.Tensor], source: str, out_dir: str, dtype: torch.dtype | None = None,
                 tie_word_embeddings: bool = False) -> str:
    """``state_dict``: the JanusModel's full state (our names, without ``vqmodel.*``) -> ``out_dir`` ready for Engine."""
    dtype = dtype or source_dtype(source)
    tensors = {**frozen_vq_tensors(source), **state_dict}
    if tie_word_embeddings:
        tensors.pop("lm_head.weight", None)
    tensors = {name_to_hf_key(n): t.detach().to("cpu", dtype).contiguous() for n, t in sorted(tensors.items())
               if not n.endswith("rotary_emb.inv_freq")}

    return write_export(tensors, source, out_dir, _is_weight_file)


def write_export(tensors: dict[str, torch.Tensor], source: str, out_dir: str, is_weight_file,
                 copy_unchanged: tuple[str, ...] = (), extra_files: dict[str, dict[str, torch.Tensor]] | None = None) -> str:
    """Writes ``tensors`` (checkpoint key -> tensor) as model.safetensors (or 4 GiB shards + index) into
    ``out_dir``, atomically; every other file of ``source`` is copied, except those ``is_weight_file`` names,
    which are left out unless listed in ``copy_unchanged``. ``extra_files``: more single safetensors files."""
    from safetensors.torch import save_file

    parent = os.path.dirname(os.path.abspath(out_dir))
    os.makedirs(parent, exist_ok=True)
    tmp = os.path.join(parent, f".tmp-export-{os.path.basename(os.path.abspath(out_dir))}-{os.getpid()}")
    if os.path.exists(tmp):
        shutil.rmtree(tmp)
    os.makedirs(tmp)
    for name in sorted(os.listdir(source)):
        keep = not is_weight_file(name) or name in copy_unchanged
        if os.path.isfile(os.path.join(source, name)) and keep:
            shutil.copy2(os.path.join(source, name), os.path.join(tmp, name))

    shards: list[dict[str, torch.Tensor]] = [{}]
    size = 0
    for key, t in tensors.items():
        nbytes = t.numel() * t.element_size()
        if shards[-1] and size + nbytes > MAX_SHARD_BYTES:
            shards.append({})
            size = 0
        shards[-1][key] = t
        size += nbytes
    if len(shards) == 1:
        save_file(shards[0], os.path.join(tmp, "model.safetensors"), metadata={"format": "pt"})
    else:
        weight_map = {}
        for i, shard in enumerate(shards):
            file = f"model-{i + 1:05d}-of-{len(shards):05d}.safetensors"
            save_file(shard, os.path.join(tmp, file), metadata={"format": "pt"})
            weight_map.update({k: file for k in shard})
        with open(os.path.join(tmp, "model.safetensors.index.json"), "w") as f:
            json.dump({"metadata": {}, "weight_map": weight_map}, f, indent=2)

    for file, extra in (extra_files or {}).items():
        save_file(extra, os.path.join(tmp, file), metadata={"format": "pt"})

    if os.path.exists(out_dir):
        old = tmp + ".old"
        os.replace(out_dir, old)
        os.replace(tmp, out_dir)
        shutil.rmtree(old)
    else:
        os.replace(tmp, out_dir)
    return out_dir
