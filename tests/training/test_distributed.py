"""FSDP2 and DeepSpeed ZeRO-2/3 in 2 gloo processes give the single-process losses on the same global batch.

Tolerance: fp32 on CPU, 1e-5 relative per kind per step (observed differences are ~1e-7, from reduction order).
"""
import json

import pytest

from helpers import losses, make_config, run_two_procs
from unicorn.training.trainer import Trainer

RTOL = 1e-5


@pytest.fixture(scope="module")
def single_losses(tiny_model, cpr_data, tmp_path_factory):
    cfg = make_config(tiny_model, cpr_data, str(tmp_path_factory.mktemp("single")), micro_batch=2)
    trainer = Trainer(cfg, log=lambda *a: None)
    trainer.train()
    return losses(trainer.history)


def _close(a, b):
    assert len(a) == len(b)
    for step_a, step_b in zip(a, b):
        assert step_a.keys() == step_b.keys()
        for k in step_a:
            assert abs(step_a[k] - step_b[k]) <= RTOL * abs(step_a[k]), (k, step_a[k], step_b[k])


def test_fsdp2_matches_single(single_losses, tiny_model, cpr_data, tmp_path):
    two = run_two_procs(model=tiny_model, data=cpr_data, out=str(tmp_path), backend="fsdp2", micro_batch=1)
    _close(single_losses, two)


@pytest.mark.parametrize("stage", [2, 3])
def test_deepspeed_matches_single(stage, single_losses, tiny_model, cpr_data, tmp_path):
    pytest.importorskip("deepspeed", reason="deepspeed is not installed (pip install deepspeed)")
    ds = tmp_path / "ds.json"
    ds.write_text(json.dumps({"zero_optimization": {"stage": stage}, "gradient_clipping": 1.0}))
    two = run_two_procs(model=tiny_model, data=cpr_data, out=str(tmp_path / "run"), backend="deepspeed",
                        deepspeed_config=str(ds), micro_batch=1)
    _close(single_losses, two)
