"""``unicorn train``: supervised fine-tuning on a CPR data set, in one process or under torchrun / deepspeed.

    unicorn train --model ckpt/janus-pro-1b --data cpr/round1 --out runs/r1 --steps 500 --lr 2e-5 --warmup 20 \
        --micro-batch 4 --grad-accum 2 --seq-len 2048 --save-every 100 --export ckpt/janus-pro-1b-r1
    torchrun --nproc_per_node 8 -m unicorn.training.cli --backend fsdp2 ...
    deepspeed --num_gpus 8 -m unicorn.training.cli --backend deepspeed --deepspeed-config zero3.json ...
"""
from __future__ import annotations

import argparse
import json
import os
import sys

from unicorn.cpr.schema import KINDS
from unicorn.training.config import PRESETS


DESCRIPTION = "Fine-tune a Janus or BAGEL checkpoint on CPR records."
# Flags a --preset may set; an explicit flag wins over the preset, the preset over these defaults.
DEFAULTS = {"steps": 100, "lr": 2e-5, "warmup": 0, "betas": (0.9, 0.95), "grad_accum": 1, "clip": 1.0, "save_every": 0,
            "ema": None}


def build_parser() -> argparse.ArgumentParser:
    """The stand-alone parser (``python -m unicorn.training.cli``, torchrun, deepspeed)."""
    p = argparse.ArgumentParser(prog="unicorn train", description=DESCRIPTION)
    add_arguments(p)
    return p


def add_subparser(sub) -> argparse.ArgumentParser:
    """Adds ``train`` to the ``unicorn`` command's subparsers (one argparse tree for every command)."""
    p = sub.add_parser("train", help="fine-tune on CPR data (single process, FSDP2 or DeepSpeed)",
                       description=DESCRIPTION)
    add_arguments(p)
    p.set_defaults(func=run)
    return p


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("--model", required=True, help="source checkpoint directory (transformers Janus layout or the official BAGEL layout)")
    p.add_argument("--data", required=True, help="CPR data set directory (manifest.json + data-*.jsonl)")
    p.add_argument("--out", required=True, help="run directory: checkpoints/, metrics.jsonl")
    p.add_argument("--backend", default="single", choices=["single", "fsdp2", "deepspeed"])
    p.add_argument("--deepspeed-config", help="DeepSpeed JSON (ZeRO stage etc.); must agree with the flags")
    p.add_argument("--preset", choices=sorted(PRESETS), default=None,
                   help="a recipe's training settings (unicorn-official: lr 1e-5, warm-up 50, 600 steps, grad-accum 4, "
                        "EMA 0.99, betas 0.9,0.95, clip 1, a checkpoint every 200 steps); explicit flags override it")
    p.add_argument("--steps", type=int, default=None, help=f"optimizer steps (default {DEFAULTS['steps']})")
    p.add_argument("--lr", type=float, default=None, help=f"peak learning rate (default {DEFAULTS['lr']})")
    p.add_argument("--warmup", type=int, default=None, help="linear warm-up steps (default 0)")
    p.add_argument("--betas", default=None, help="AdamW betas as B1,B2 (default 0.9,0.95)")
    p.add_argument("--schedule", default="constant", choices=["constant", "cosine"])
    p.add_argument("--min-lr-ratio", type=float, default=0.1, help="cosine floor as a fraction of --lr")
    p.add_argument("--weight-decay", type=float, default=0.0)
    p.add_argument("--adam-eps", type=float, default=1e-8, help="AdamW epsilon (the official BAGEL trainer: 1e-15)")
    p.add_argument("--micro-batch", type=int, default=1, help="packed rows per rank per micro-step")
    p.add_argument("--grad-accum", type=int, default=None, help="micro-steps per optimizer step (default 1)")
    p.add_argument("--seq-len", type=int, default=2048)
    p.add_argument("--clip", type=float, default=None, help="gradient-norm clip (<= 0: off; default 1.0)")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--kind-weights", default=None, help='loss weight per kind, e.g. "t2i=1,caption=0.5"')
    p.add_argument("--cond-dropout", type=float, default=0.0,
                   help="chance that a t2i sample trains on the content-free prompt (classifier-free guidance); "
                        "BAGEL: that a t2i prompt or reflection instruction is dropped")
    p.add_argument("--ce-weight", type=float, default=0.1, help="BAGEL: weight of the text CE term")
    p.add_argument("--mse-weight", type=float, default=1.0, help="BAGEL: weight of the flow-matching MSE term")
    p.add_argument("--timestep-shift", type=float, default=1.0,
                   help="BAGEL: shift of the training flow times sigmoid(z) (official trainer: 1.0)")
    p.add_argument("--vit-cond-dropout", type=float, default=0.0,
                   help="BAGEL: chance that a reflection's context image is dropped from the ViT path")
    p.add_argument("--vae-cond-dropout", type=float, default=0.0,
                   help="BAGEL: chance that a reflection's context image is dropped from the VAE path")
    p.add_argument("--loss-normalization", default="step", choices=["step", "micro"],
                   help="each loss term's mean over its tokens in the whole step, or per micro-step with the "
                        "micro-steps weighted equally (the official BAGEL trainer; the same at --grad-accum 1)")
    p.add_argument("--save-every", type=int, default=None, help="checkpoint every N steps (and always at the end)")
    p.add_argument("--ema", type=float, default=None, metavar="DECAY",
                   help="keep an fp32 moving average of the weights with this decay (official: 0.99), in checkpoints")
    p.add_argument("--export-ema", action="store_true",
                   help="--export serves the moving average (Janus: in place of the raw weights; BAGEL: as "
                        "ema.safetensors, which the loader takes first, beside the raw model.safetensors)")
    p.add_argument("--keep", type=int, default=2, help="checkpoints to keep")
    p.add_argument("--resume", action="store_true", help="continue from the newest checkpoint under --out")
    p.add_argument("--resume-from", help="continue from this checkpoint directory")
    p.add_argument("--export", help="write the trained model here (engine layout) at the end")
    p.add_argument("--on-bad-record", default="stop", choices=["stop", "skip"])
    p.add_argument("--device", default="auto", choices=["auto", "cpu", "cuda"])
    p.add_argument("--precision", default="auto", choices=["auto", "bf16", "fp32"])
    p.add_argument("--activation-checkpointing", action="store_true")
    p.add_argument("--compile", action="store_true")
    p.add_argument("--freeze-vision", action="store_true", help="freeze the SigLIP tower")
    p.add_argument("--log-every", type=int, default=1)
    p.add_argument("--local_rank", "--local-rank", type=int, default=None, help=argparse.SUPPRESS)  # deepspeed launcher


def _kind_weights(text: str | None) -> dict:
    weights = {k: 1.0 for k in KINDS}
    if not text:
        return weights
    for part in text.split(","):
        name, _, value = part.partition("=")
        if name.strip() not in KINDS or not value:
            raise ValueError(f"--kind-weights: expected kind=weight with kind in {', '.join(KINDS)}, got {part!r}")
        weights[name.strip()] = float(value)
    return weights


def _betas(text) -> tuple[float, float]:
    if isinstance(text, tuple):
        return text
    parts = text.split(",")
    try:
        betas = tuple(float(x) for x in parts)
    except ValueError:
        betas = ()
    if len(betas) != 2 or not all(0.0 <= b < 1.0 for b in betas):
        raise ValueError(f"--betas: expected B1,B2 with each in [0, 1), got {text!r}")
    return betas


def resolved(args) -> dict:
    """The preset-able settings: explicit flag, else the preset's value, else the default."""
    preset = PRESETS[args.preset] if getattr(args, "preset", None) else {}
    return {k: getattr(args, k) if getattr(args, k, None) is not None else preset.get(k, default)
            for k, default in DEFAULTS.items()}


def config_from_args(args):
    from unicorn.training.config import OptimConfig, TrainConfig

    v = resolved(args)
    optim = OptimConfig(lr=v["lr"], weight_decay=args.weight_decay, eps=args.adam_eps, warmup=v["warmup"],
                        schedule=args.schedule, min_lr_ratio=args.min_lr_ratio, clip=v["clip"],
                        betas=_betas(v["betas"]))
    return TrainConfig(
        model=args.model, data=args.data, out=args.out, backend=args.backend, deepspeed_config=args.deepspeed_config,
        steps=v["steps"], micro_batch=args.micro_batch, grad_accum=v["grad_accum"], seq_len=args.seq_len,
        seed=args.seed, optim=optim, kind_weights=_kind_weights(args.kind_weights), cond_dropout=args.cond_dropout,
        ce_weight=args.ce_weight, mse_weight=args.mse_weight, timestep_shift=args.timestep_shift,
        vit_cond_dropout=args.vit_cond_dropout, vae_cond_dropout=args.vae_cond_dropout,
        loss_normalization=args.loss_normalization,
        save_every=v["save_every"], ema_decay=v["ema"], export_ema=args.export_ema,
        keep=args.keep, resume=args.resume, resume_from=args.resume_from, export=args.export,
        on_bad_record=args.on_bad_record, device=args.device, precision=args.precision,
        activation_checkpointing=args.activation_checkpointing, compile=args.compile,
        freeze_vision=args.freeze_vision, log_every=args.log_every,
    )


def main(argv: list[str] | None = None) -> int:
    return run(build_parser().parse_args(argv))


def run(args: argparse.Namespace) -> int:
    """Trains with parsed arguments; errors print one line and return 2."""
    if args.local_rank is not None:
        os.environ.setdefault("LOCAL_RANK", str(args.local_rank))
    from unicorn.cpr.schema import RecordError
    from unicorn.models.errors import CheckpointError
    from unicorn.training.checkpoint import ResumeError
    from unicorn.training.config import ConfigError

    try:
        config = config_from_args(args)
        from unicorn.training.trainer import Trainer

        trainer = Trainer(config)
        summary = trainer.train()
    except (ConfigError, RecordError, CheckpointError, ResumeError, ValueError, RuntimeError) as e:
        if os.environ.get("UNICORN_DEBUG"):
            raise
        message = str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__
        print(f"error: {message}", file=sys.stderr)
        return 2
    if trainer.rank == 0:
        print("summary: " + json.dumps(summary))
    _shutdown()
    return 0


def _shutdown() -> None:
    import torch.distributed as dist

    if dist.is_initialized():
        dist.barrier()
        dist.destroy_process_group()


if __name__ == "__main__":
    sys.exit(main())
