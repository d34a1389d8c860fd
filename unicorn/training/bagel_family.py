"""BAGEL as a training family (family.py): text CE on the understanding path and flow-matching MSE on the
generation path, weighted ``--ce-weight`` / ``--mse-weight`` (official UniCorn fine-tuning: 0.1 and 1.0), with the
VAE frozen in the data pipeline (facts: method.md §4, the official ``pretrain_unified_navit.py``).

The official trainer normalizes each term by its token count over the ranks of one micro-step and divides by the
accumulation steps; here, as for every family, by the count over the whole step (identical at --grad-accum 1).
"""
from __future__ import annotations

import hashlib
import json
import os

import torch

from unicorn.models import load_model, load_tokenizer
from unicorn.models.bagel_checkpoint import AE_FILE, EMA_FILE, weight_shards
from unicorn.training.bagel_data import BagelSampleEncoder, DropoutConfig, num_tokens, term_counts
from unicorn.training.bagel_model import LOSS_TERMS, TERMS, BagelTrainingModel
from unicorn.training.config import ConfigError, TrainConfig
from unicorn.training.data import DataConfig
from unicorn.training.export import write_export

CONFIG_FILES = ("llm_config.json", "vit_config.json", "config.json")


class BagelFamily:
    terms = TERMS
    shown_terms = LOSS_TERMS  # the progress line; the metrics hold the per-kind split too
    metrics_noun = "term"
    state_prefix = "bagel."
    ema_beside_raw = True  # the official layout: model.safetensors (raw) and ema.safetensors (served)

    def __init__(self, cfg: TrainConfig, device: torch.device, load_device: torch.device):
        if any(w != 1.0 for w in cfg.kind_weights.values()):
            raise ConfigError("--kind-weights is Janus'; BAGEL weights its two terms with --ce-weight and --mse-weight")
        self.cfg, self.device = cfg, device
        self.dropout = DropoutConfig(cfg.cond_dropout, cfg.vit_cond_dropout, cfg.vae_cond_dropout)
        bagel = load_model(cfg.model, device=load_device, dtype=torch.float32)
        self.vae = bagel.vae.to(device)
        self.model_view = bagel  # arch, token ids, spec for the data pipeline
        self.module = BagelTrainingModel(bagel.train())
        self.num_params = sum(p.numel() for p in self.module.parameters())  # without the VAE
        # a token runs one MoT expert: MFU counts the parameters of one (``*_moe_gen`` left out)
        self.active_params = self.num_params - sum(p.numel() for n, p in self.module.named_parameters()
                                                   if "_moe_gen" in n)

    @staticmethod
    def context_length(model_path: str) -> int:
        """The LM's context (llm_config.json's max_position_embeddings), without loading weights."""
        from unicorn.models.bagel_config import llm_arch_from_config, read_json

        return llm_arch_from_config(read_json(model_path, "llm_config.json")).max_position_embeddings

    def weights(self) -> torch.Tensor:
        weights = torch.zeros(len(TERMS), dtype=torch.float32)  # the per-kind split is logged only
        weights[0], weights[1] = self.cfg.ce_weight, self.cfg.mse_weight
        return weights

    def build_data(self, rank: int, world_size: int, log):
        cfg = self.cfg
        encoder = BagelSampleEncoder(load_tokenizer(cfg.model), self.model_view, self.vae, cfg.data, self.device,
                                     cfg.timestep_shift, self.dropout)
        data_cfg = DataConfig(cfg.data, cfg.seq_len, cfg.micro_batch, cfg.seed, cfg.on_bad_record)
        return data_cfg.build(encoder, None, rank, world_size, warn=log)

    def counts(self, batch) -> torch.Tensor:
        return term_counts(batch)

    def num_tokens(self, batch) -> float:
        return num_tokens(batch)

    def meta(self) -> dict:
        cfg = self.cfg
        return {"cond_dropout": [cfg.cond_dropout, cfg.vit_cond_dropout, cfg.vae_cond_dropout],
                "timestep_shift": cfg.timestep_shift}

    def model_hash(self) -> str:
        configs = {}
        for name in CONFIG_FILES:
            path = os.path.join(self.cfg.model, name)
            if os.path.exists(path):
                with open(path) as f:
                    configs[name] = json.load(f)
        return hashlib.sha256(json.dumps(configs, sort_keys=True).encode()).hexdigest()[:16]

    def export(self, state: dict[str, torch.Tensor], out_dir: str, ema: dict[str, torch.Tensor] | None = None) -> None:
        export_bagel(state, self.cfg.model, out_dir, ema=ema)


_SAFETENSORS_DTYPES = {"F32": torch.float32, "BF16": torch.bfloat16, "F16": torch.float16}


def source_dtype(source: str) -> torch.dtype:
    """The dtype of the source's LM weights (the official ema.safetensors is bf16; the tiny checkpoints fp32)."""
    from safetensors import safe_open

    key = "language_model.model.embed_tokens.weight"
    for shard in weight_shards(source)[:-1]:  # the last is ae.safetensors
        with safe_open(shard.file, framework="pt", device="cpu") as f:
            if key in f.keys():
                return _SAFETENSORS_DTYPES.get(f.get_slice(key).get_dtype(), torch.float32)
    return torch.float32


def export_bagel(state: dict[str, torch.Tensor], source: str, out_dir: str, dtype: torch.dtype | None = None,
                 ema: dict[str, torch.Tensor] | None = None) -> str:
    """The trained BagelModel's state (its names, without ``vae.*``) -> ``out_dir`` in the official layout: a
    fine-tuned ``model.safetensors``, the EMA weights (when given) as ``ema.safetensors`` (what the loader then
    serves, as the official evaluation uses the EMA), and the source's ``ae.safetensors``, configs and tokenizer
    files copied unchanged."""
    dtype = dtype or source_dtype(source)

    def tensors(weights):
        return {name: t.detach().to("cpu", dtype).contiguous() for name, t in sorted(weights.items())
                if not name.endswith("rotary_emb.inv_freq") and not name.startswith("vae.")}

    extra = {EMA_FILE: tensors(ema)} if ema is not None else None
    return write_export(tensors(state), source, out_dir, lambda name: name.endswith((".safetensors", ".bin"))
                        or name.endswith(".safetensors.index.json"), copy_unchanged=(AE_FILE,), extra_files=extra)

