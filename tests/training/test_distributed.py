"""FSDP2 and DeepSpeed ZeRO-2/3 in 2 gloo processes give the single-process losses on the same global batch, and
the same EMA weights (each rank averages its own shards; the export gathers them).

Tolerance: fp32 on CPU, 1e-5 relative per kind per step (observed differences are ~1e-7, from reduction order);
EMA weights within EMA_ATOL.
"""
import json

import pytest
import torch

from helpers import assert_histories_close, losses, make_config, run_two_procs
from unicorn.training.trainer import Trainer

RTOL = 1e-5
EMA_ATOL = 1e-5
EMA = dict(ema_decay=0.9, export_ema=True)


@pytest.fixture(scope="module")
def single_run(tiny_model, cpr_data, tmp_path_factory):
    root = tmp_path_factory.mktemp("single")
    cfg = make_config(tiny_model, cpr_data, str(root / "run"), micro_batch=2, export=str(root / "export"), **EMA)
    trainer = Trainer(cfg, log=lambda *a: None)
    trainer.train()
    return losses(trainer.history), str(root / "export")


@pytest.fixture(scope="module")
def single_losses(single_run):
    return single_run[0]


def _same_weights(a: str, b: str, atol: float = EMA_ATOL):
    from safetensors.torch import load_file

    wa, wb = load_file(f"{a}/model.safetensors"), load_file(f"{b}/model.safetensors")
    assert wa.keys() == wb.keys()
    for k in wa:
        torch.testing.assert_close(wa[k], wb[k], rtol=0, atol=atol, msg=lambda m: f"{k}: {m}")


def _close(a, b):
    assert_histories_close(a, b, RTOL)


def test_fsdp2_matches_single(single_run, tiny_model, cpr_data, tmp_path):
    two = run_two_procs(model=tiny_model, data=cpr_data, out=str(tmp_path / "run"), backend="fsdp2", micro_batch=1,
                        export=str(tmp_path / "export"), **EMA)
    _close(single_run[0], two)
    _same_weights(single_run[1], str(tmp_path / "export"))


@pytest.mark.parametrize("stage", [2, 3])
def test_deepspeed_matches_single(stage, single_run, tiny_model, cpr_data, tmp_path):
    pytest.importorskip("deepspeed", reason="deepspeed is not installed (pip install deepspeed)")
    ds = tmp_path / "ds.json"
    ds.write_text(json.dumps({"zero_optimization": {"stage": stage}, "gradient_clipping": 1.0}))
    two = run_two_procs(model=tiny_model, data=cpr_data, out=str(tmp_path / "run"), backend="deepspeed",
                        deepspeed_config=str(ds), micro_batch=1, export=str(tmp_path / "export"), **EMA)
    _close(single_run[0], two)
    _same_weights(single_run[1], str(tmp_path / "export"))
