"""Janus as a training family: CE on text and VQ image tokens, one loss term per CPR kind (family.py)."""
from __future__ import annotations

import torch

from unicorn.cpr.schema import KINDS
from unicorn.models import load_model, load_tokenizer
from unicorn.training import checkpoint as ckpt
from unicorn.training.config import TrainConfig
from unicorn.training.data import PAD, DataConfig, SampleEncoder, VQCodeSource, kind_token_counts
from unicorn.training.export import export_janus
from unicorn.training.model import TrainingModel


class JanusFamily:
    terms = KINDS
    shown_terms = KINDS
    metrics_noun = "kind"
    state_prefix = "janus."
    ema_beside_raw = False  # one set of weights: an exported EMA replaces the raw ones

    def __init__(self, cfg: TrainConfig, device: torch.device, load_device: torch.device):
        self.cfg, self.device = cfg, device
        janus = load_model(cfg.model, device=load_device, dtype=torch.float32)
        self.spec = janus.spec
        self.vq = janus.vqmodel.to(device)
        self.processing = janus.image_processing
        self.tie_word_embeddings = janus.arch.tie_word_embeddings
        self.module = TrainingModel(janus.train())
        self.num_params = sum(p.numel() for p in self.module.parameters())  # without the VQ codec
        self.active_params = self.num_params

    @staticmethod
    def context_length(model_path: str) -> int:
        """The LM's context (max_position_embeddings) from the checkpoint's config, without loading weights."""
        from unicorn.models.janus_checkpoint import janus_arch_from_deepseek_config
        from unicorn.models.janus_config import janus_arch_from_hf_config
        from unicorn.models.loader import read_config

        config = read_config(model_path)
        read = janus_arch_from_hf_config if config.get("model_type") == "janus" else janus_arch_from_deepseek_config
        return read(config).text.max_position_embeddings

    def weights(self) -> torch.Tensor:
        return torch.tensor(self.cfg.weights(), dtype=torch.float32)

    def build_data(self, rank: int, world_size: int, log):
        cfg = self.cfg
        encoder = SampleEncoder(load_tokenizer(cfg.model), self.spec, cfg.data,
                                VQCodeSource(self.vq, self.processing, self.spec, self.device))
        data_cfg = DataConfig(cfg.data, cfg.seq_len, cfg.micro_batch, cfg.seed, cfg.on_bad_record,
                              cond_dropout=cfg.cond_dropout)
        return data_cfg.build(encoder, self.processing, rank, world_size, warn=log)

    def counts(self, batch) -> torch.Tensor:
        return kind_token_counts(batch)

    def num_tokens(self, batch) -> float:
        return float((batch["source"] != PAD).sum())

    def meta(self) -> dict:
        return {"cond_dropout": self.cfg.cond_dropout}

    def model_hash(self) -> str:
        return ckpt.model_config_hash(self.cfg.model)

    def export(self, state: dict[str, torch.Tensor] | None, out_dir: str,
               ema: dict[str, torch.Tensor] | None = None) -> None:
        export_janus(state if ema is None else ema, self.cfg.model, out_dir,
                     tie_word_embeddings=self.tie_word_embeddings)
