"""Rebuilds the toy-world Janus from scratch: tokenizer -> VQ -> oracle-labelled CPR data -> LM pretraining, and
optionally a second LM round on oracle judgements of round 1's own drawings (model/self_drawn.py; off by default:
measured, it did not reliably help, see bench/toyworld/README.md).

    unicorn toyworld pretrain --out DIR --seed 0 [--quick] [--self-drawn-steps N [--self-drawn-per-prompt K]]

Every stage is seeded; the same seed on the same machine (and torch thread count) gives the same
model.safetensors (its sha256 is printed and written to DIR/pretrain_report.json). The LM, the understanding encoder,
the aligners and the generation head are trained by the project's trainer (unicorn/training) on the CPR data set;
the VQ codec is trained first by its own small loop (model/vq_train.py) and stays frozen afterwards.

On 2 CPU cores: VQ ~10 min, data ~1 min, LM ~27 min (round 2: drawing ~2 min, LM ~5 min). The trained codec is
kept in WORK/vq with the key it was trained under (architecture, training config, thread count, sha256 of the codec
and training code); a rerun with the same key (after a crash, or with other data or LM settings) reuses it and gets
the same bytes as a run from scratch.
"""
from __future__ import annotations

import hashlib
import json
import os
import shutil
import time
from dataclasses import asdict, dataclass, field, replace

import torch

from unicorn.models import vq as vq_model
from unicorn.models.janus_checkpoint import name_to_hf_key
from unicorn.models.janus_config import VQArch
from unicorn.models.janus_tiny import write_random_janus_checkpoint
from unicorn.toyworld.model import vq_train
from unicorn.toyworld.model.data import WorldDataConfig, build_world_dataset, corpus_texts
from unicorn.toyworld.model.self_drawn import SelfDrawnConfig, build_self_drawn_dataset
from unicorn.toyworld.model.tokenizer import template_texts, train_world_tokenizer
from unicorn.toyworld.model.vq_train import VQTrainConfig, train_vq

# The shipped architecture: about 2.3M parameters, ~5 MB in bf16. 64 px images, 8x8 = 64 tokens for both the SigLIP-style
# understanding encoder (patch 8) and the VQ codec (8x downsampling).
TEXT = dict(vocab_size=640, hidden_size=128, intermediate_size=344, num_hidden_layers=4, num_attention_heads=4,
            num_key_value_heads=4, max_position_embeddings=512)
VISION = dict(hidden_size=64, num_hidden_layers=2, num_attention_heads=2, image_size=64, patch_size=8, mlp_ratio=2)
VQ = dict(embed_dim=8, num_embeddings=512, latent_channels=32, base_channels=32, channel_multiplier=[1, 1, 2, 2],
          num_res_blocks=1)


@dataclass(frozen=True)
class ModelArch:
    """The toy Janus' sizes: the text, vision and VQ parts of config.json (the writer's fields)."""
    text: dict = field(default_factory=lambda: dict(TEXT))
    vision: dict = field(default_factory=lambda: dict(VISION))
    vq: dict = field(default_factory=lambda: dict(VQ))

    @property
    def grid(self) -> int:
        """Codes per side of a drawn image (the VQ's ``num_patches``; else the understanding grid, as in Janus-Pro)."""
        return self.vq.get("num_patches") or self.vision["image_size"] // self.vision["patch_size"]

    def vq_arch(self) -> VQArch:
        return VQArch(**{**self.vq, "channel_multiplier": tuple(self.vq["channel_multiplier"])},
                      projection_dim=self.text["hidden_size"])


# Named sizes (bench/toyworld/codec.py measures their codecs): the shipped model's, and codecs with more capacity:
# 4x the tokens (a 16x16 grid: 4x downsampling; "grid16" also gives understanding 4 px patches, one count for both
# as in Janus-Pro, while "draw16" keeps understanding at 8x8 = 64 features and draws 256 codes), or 8x the codes at
# the shipped 8x8 grid. grid16 and draw16 have the same codec.
GRID16_VQ = {**VQ, "num_embeddings": 1024, "channel_multiplier": [1, 2, 2]}
ARCHS = {
    "shipped": ModelArch(),
    "grid16": ModelArch(vision={**VISION, "patch_size": 4}, vq=GRID16_VQ),
    "draw16": ModelArch(vq={**GRID16_VQ, "num_patches": 16}),
    "grid8-4096": ModelArch(vq={**VQ, "num_embeddings": 4096, "embed_dim": 16}),
}


@dataclass(frozen=True)
class LMTrainConfig:
    steps: int = 8000  # 4000 gave a judge no better than chance at ranking its own drawings (bench README)
    micro_batch: int = 4
    seq_len: int = 512
    lr: float = 2e-3
    warmup: int = 30
    weight_decay: float = 0.01
    cond_dropout: float = 0.1  # t2i samples on the content-free prompt, so that classifier-free guidance works
    # Each kind's mean CE counts once per step; t2i's (3-5 nats over 64 codes) would otherwise dominate the clipped
    # gradient and starve judging and understanding.
    kind_weights: dict = field(default_factory=lambda: {"t2i": 0.1})


@dataclass(frozen=True)
class PretrainConfig:
    seed: int = 0
    arch: ModelArch = field(default_factory=ModelArch)
    data: WorldDataConfig = field(default_factory=WorldDataConfig)
    vq: VQTrainConfig = field(default_factory=VQTrainConfig)
    lm: LMTrainConfig = field(default_factory=LMTrainConfig)
    self_drawn: SelfDrawnConfig = field(default_factory=SelfDrawnConfig)

    @classmethod
    def quick(cls, seed: int = 0) -> "PretrainConfig":
        """A minute-scale run with the same pipeline (for tests): tiny data, few steps."""
        return cls(seed=seed, data=WorldDataConfig(scenes_per_category=6, seed=seed),
                   vq=VQTrainConfig(num_images=64, steps=6, reseed_every=3, seed=seed),
                   lm=LMTrainConfig(steps=4, micro_batch=2, seq_len=512, warmup=1),
                   self_drawn=SelfDrawnConfig(scenes_per_category=1, drawings_per_prompt=2, steps=2))

    def with_seed(self, seed: int) -> "PretrainConfig":
        return replace(self, seed=seed, data=replace(self.data, seed=seed), vq=replace(self.vq, seed=seed))


def file_sha256(path: str) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


def write_initial_checkpoint(path: str, tokenizer, vq_state: dict[str, torch.Tensor], seed: int,
                             arch: ModelArch | None = None) -> None:
    """The trainer's starting point: random LM / vision / heads, our tokenizer, the trained VQ codec."""
    from safetensors.torch import load_file, save_file

    arch = arch or ModelArch()
    # bf16 on disk keeps the shipped checkpoint small; the trainer loads and trains it in fp32 and exports bf16
    write_random_janus_checkpoint(path, preset="tiny", text=arch.text, vision=arch.vision, vq=arch.vq, seed=seed,
                                  dtype=torch.bfloat16)
    tokenizer.save(os.path.join(path, "tokenizer.json"))  # same special ids 0..5 as the writer's own tokenizer
    weights = os.path.join(path, "model.safetensors")
    tensors = load_file(weights)
    for name, tensor in vq_state.items():
        key = name_to_hf_key("vqmodel." + name)
        assert key in tensors and tensors[key].shape == tensor.shape, (key, tensor.shape)
        tensors[key] = tensor.detach().to(tensors[key].dtype).contiguous()
    save_file(tensors, weights, metadata={"format": "pt"})


def save_vq_stage(vq_dir: str, key: dict, vq, stats: dict) -> None:
    """The trained codec (fp32) and the key it was trained under, written atomically: a rerun after a crash or with
    other LM settings skips the slowest stage and still gets bit-identical codes."""
    from safetensors.torch import save_file

    tmp = vq_dir + ".tmp"
    shutil.rmtree(tmp, ignore_errors=True)
    os.makedirs(tmp)
    save_file({k: v.contiguous() for k, v in vq.state_dict().items()}, os.path.join(tmp, "vq.safetensors"))
    with open(os.path.join(tmp, "stage.json"), "w") as f:
        json.dump({"key": key, "stats": stats}, f, indent=2)
    shutil.rmtree(vq_dir, ignore_errors=True)
    os.replace(tmp, vq_dir)


def load_vq_stage(vq_dir: str, key: dict, arch: VQArch):
    """(VQModel, stats) saved under the same key, else None."""
    from safetensors.torch import load_file

    from unicorn.models.vq import VQModel

    try:
        with open(os.path.join(vq_dir, "stage.json")) as f:
            stage = json.load(f)
    except (OSError, ValueError):
        return None
    if stage.get("key") != json.loads(json.dumps(key)):
        return None
    vq = VQModel(arch, grid=key["grid"])
    vq.load_state_dict(load_file(os.path.join(vq_dir, "vq.safetensors")))
    return vq.eval(), stage["stats"]


RESTARTED_STAGES = ("init", "data", "train", "round1", "self_drawn", "train_self")


def lm_train_config(model: str, data: str, train_dir: str, export: str, seed: int, steps: int, lr: float,
                    lm: LMTrainConfig):
    """One LM round with the project's trainer: ``steps`` from ``model``'s weights with a fresh optimizer, exported to
    ``export`` in the engine's layout."""
    from unicorn.training.config import OptimConfig, TrainConfig

    return TrainConfig(
        model=model, data=data, out=train_dir, backend="single", steps=steps, micro_batch=lm.micro_batch,
        seq_len=lm.seq_len, seed=seed, device="cpu", precision="fp32",
        optim=OptimConfig(lr=lr, warmup=lm.warmup, schedule="cosine", weight_decay=lm.weight_decay, clip=1.0),
        kind_weights=dict(lm.kind_weights), cond_dropout=lm.cond_dropout, log_every=max(1, steps // 30),
        export=export, keep=1,
    )


def pretrain(out: str, cfg: PretrainConfig, work_dir: str | None = None, log=print) -> dict:
    """Builds the checkpoint at ``out`` (engine layout); returns the report also written to out/pretrain_report.json."""
    from unicorn.training.trainer import Trainer

    torch.manual_seed(cfg.seed)
    work = work_dir or out.rstrip("/") + ".work"
    for stage in RESTARTED_STAGES:  # the VQ stage may be reused (load_vq_stage checks its key)
        shutil.rmtree(os.path.join(work, stage), ignore_errors=True)
    os.makedirs(work, exist_ok=True)
    times = {}
    start = t = time.perf_counter()

    corpus = corpus_texts(cfg.data) + template_texts()
    tokenizer = train_world_tokenizer(corpus, cfg.arch.text["vocab_size"])
    times["tokenizer_s"] = time.perf_counter() - t
    log(f"tokenizer: {tokenizer.get_vocab_size()} tokens from {len(corpus)} texts ({times['tokenizer_s']:.1f}s)")

    t = time.perf_counter()
    vq_arch = cfg.arch.vq_arch()
    vq_dir = os.path.join(work, "vq")
    key = {"arch": cfg.arch.vq, "grid": cfg.arch.grid, "train": asdict(cfg.vq),
           "torch_threads": torch.get_num_threads(),
           # an edited codec or training loop must not reuse a codec trained by the old code
           "code": {m.__name__: file_sha256(m.__file__) for m in (vq_train, vq_model)}}
    cached = load_vq_stage(vq_dir, key, vq_arch)
    if cached is not None:
        vq, vq_stats = cached
        log(f"vq: reusing {vq_dir} (same architecture, training config, thread count and code)")
    else:
        vq, vq_stats = train_vq(vq_arch, key["grid"], cfg.vq, log=log)
        save_vq_stage(vq_dir, key, vq, vq_stats)
    times["vq_s"] = time.perf_counter() - t

    t = time.perf_counter()
    init_dir = os.path.join(work, "init")
    write_initial_checkpoint(init_dir, tokenizer, vq.state_dict(), cfg.seed, cfg.arch)
    data_dir = os.path.join(work, "data")
    data_stats = build_world_dataset(data_dir, vq, cfg.data, log=log)
    times["data_s"] = time.perf_counter() - t
    log(f"data: {data_stats} ({times['data_s']:.1f}s)")

    t = time.perf_counter()
    lm, second = cfg.lm, cfg.self_drawn
    round1 = os.path.join(work, "round1") if second.steps else out
    summary1 = Trainer(lm_train_config(init_dir, data_dir, os.path.join(work, "train"), round1, cfg.seed, lm.steps, lm.lr,
                                       lm), log=log).train()
    times["lm_s"] = time.perf_counter() - t
    self_stats = summary2 = None
    if second.steps:
        t = time.perf_counter()
        self_dir = os.path.join(work, "self_drawn")
        self_stats = build_self_drawn_dataset(round1, data_dir, self_dir, second, cfg.seed, log=log)
        times["self_drawn_s"] = time.perf_counter() - t
        t = time.perf_counter()
        summary2 = Trainer(lm_train_config(round1, self_dir, os.path.join(work, "train_self"), out, cfg.seed,
                                           second.steps, second.lr, lm), log=log).train()
        times["lm_round2_s"] = time.perf_counter() - t
    times["total_s"] = time.perf_counter() - start

    weights = os.path.join(out, "model.safetensors")
    os.chmod(weights, 0o644)  # shipped in the package: readable by everyone
    report = {
        "seed": cfg.seed, "config": asdict(cfg), "times": times, "torch_threads": torch.get_num_threads(),
        "vq": vq_stats, "data": data_stats, "lm": {k: v for k, v in summary1.items() if k != "export"},
        "self_drawn": self_stats, "lm_round2": summary2 and {k: v for k, v in summary2.items() if k != "export"},
        "model_safetensors_sha256": file_sha256(weights), "model_safetensors_bytes": os.path.getsize(weights),
    }
    with open(os.path.join(out, "pretrain_report.json"), "w") as f:
        json.dump(report, f, indent=2)
    log(f"pretrained {out} in {times['total_s']:.0f}s; model.safetensors sha256 {report['model_safetensors_sha256']}")
    return report
