"""EMA weights: the trainer's average equals one computed here in float64 from the raw weights after every step,
it is exported in place of the raw weights when asked (the raw ones untouched), and a run killed and resumed keeps
an average bit-identical to an uninterrupted run's. (FSDP2 / ZeRO: test_distributed.py, test_resume_export.py.)"""
import os

import pytest
import torch

from helpers import losses, make_config
from unicorn.training.config import ConfigError
from unicorn.training.trainer import Trainer

QUIET = dict(log=lambda *a: None)
DECAY = 0.9  # below the official 0.99 so that 4 steps move the average visibly away from the start


def _trainable(trainer) -> dict[str, torch.Tensor]:
    return {n: p.detach().clone() for n, p in trainer.backend.module.named_parameters() if p.requires_grad}


def test_ema_matches_a_plain_reference(tiny_model, cpr_data, tmp_path):
    trainer = Trainer(make_config(tiny_model, cpr_data, str(tmp_path / "run"), steps=4, ema_decay=DECAY), **QUIET)
    reference = {n: w.double() for n, w in _trainable(trainer).items()}
    start = dict(reference)
    for _ in range(4):
        trainer.train_step()
        for n, w in _trainable(trainer).items():
            reference[n] = DECAY * reference[n] + (1 - DECAY) * w.double()
    ema = trainer.ema.state_by_name()
    assert ema.keys() == reference.keys()
    raw = _trainable(trainer)
    moved = 0
    for n, want in reference.items():
        assert ema[n].dtype == torch.float32
        torch.testing.assert_close(ema[n].double(), want, rtol=0, atol=1e-6)
        moved += not torch.allclose(want, start[n].double()) and not torch.allclose(ema[n], raw[n])
    assert moved > len(reference) // 2  # the average is neither the start nor the current weights

    raw_full = trainer.full_janus_state_dict()
    ema_full = trainer.full_janus_state_dict(ema=True)
    for n, w in ema.items():
        key = n.removeprefix("janus.")
        assert torch.equal(ema_full[key], w) and torch.equal(raw_full[key], raw[n])
    assert all(torch.equal(w, raw[n]) for n, w in _trainable(trainer).items())  # swapped back

    from unicorn.models import load_model

    trainer.export(str(tmp_path / "ema-export"), ema=True)
    served = load_model(str(tmp_path / "ema-export"), device="cpu", dtype=torch.float32).state_dict()
    for n, w in ema.items():
        torch.testing.assert_close(served[n.removeprefix("janus.")].float(), w, rtol=0, atol=0)


def test_resume_with_ema_is_bit_identical(tiny_model, cpr_data, tmp_path):
    kw = dict(steps=6, ema_decay=DECAY, export_ema=True)
    full = Trainer(make_config(tiny_model, cpr_data, str(tmp_path / "full"), export=str(tmp_path / "full-x"), **kw),
                   **QUIET)
    full.train()
    out = str(tmp_path / "killed")
    Trainer(make_config(tiny_model, cpr_data, out, save_every=3, stop_after=4, **kw), **QUIET).train()
    assert os.path.isfile(os.path.join(out, "checkpoints", "step_00000003", "ema", "rank_0.pt"))
    resumed = Trainer(make_config(tiny_model, cpr_data, out, save_every=3, resume=True,
                                  export=str(tmp_path / "resumed-x"), **kw), **QUIET)
    assert resumed.step == 3
    resumed.train()
    assert losses(resumed.history) == losses(full.history)[3:]
    a, b = full.ema.state_by_name(), resumed.ema.state_by_name()
    assert a.keys() == b.keys() and all(torch.equal(a[n], b[n]) for n in a)
    from safetensors.torch import load_file

    fa, fb = load_file(str(tmp_path / "full-x" / "model.safetensors")), load_file(str(tmp_path / "resumed-x" / "model.safetensors"))
    assert fa.keys() == fb.keys() and all(torch.equal(fa[k], fb[k]) for k in fa)


def test_ema_settings_are_checked(tiny_model, cpr_data, tmp_path):
    from unicorn.training.checkpoint import ResumeError

    with pytest.raises(ConfigError, match="--ema must be in"):
        make_config(tiny_model, cpr_data, str(tmp_path), ema_decay=1.0)
    with pytest.raises(ConfigError, match="--export-ema needs --ema"):
        make_config(tiny_model, cpr_data, str(tmp_path), export_ema=True)
    out = str(tmp_path / "plain")
    Trainer(make_config(tiny_model, cpr_data, out, steps=1), **QUIET).train()
    with pytest.raises(ResumeError, match="ema_decay: checkpoint None, this run 0.99"):
        Trainer(make_config(tiny_model, cpr_data, out, steps=2, resume=True, ema_decay=0.99), **QUIET)


def test_official_preset_fills_unset_flags_only(tiny_model, cpr_data, tmp_path):
    from unicorn.training.cli import build_parser, config_from_args

    base = ["--model", tiny_model, "--data", cpr_data, "--out", str(tmp_path)]
    cfg = config_from_args(build_parser().parse_args(base + ["--preset", "unicorn-official"]))
    assert (cfg.optim.lr, cfg.optim.warmup, cfg.steps, cfg.grad_accum, cfg.ema_decay, cfg.optim.betas, cfg.optim.clip,
            cfg.save_every) == (1e-5, 50, 600, 4, 0.99, (0.9, 0.95), 1.0, 200)
    cfg = config_from_args(build_parser().parse_args(base + ["--preset", "unicorn-official", "--steps", "7", "--ema", "0.5"]))
    assert (cfg.steps, cfg.ema_decay, cfg.grad_accum) == (7, 0.5, 4)
    cfg = config_from_args(build_parser().parse_args(base))
    assert (cfg.steps, cfg.ema_decay, cfg.optim.lr, cfg.grad_accum) == (100, None, 2e-5, 1)
