import json
import os

import pytest
import torch

from helpers import losses, make_config, run_two_procs
from unicorn.training.checkpoint import ResumeError, list_checkpoints
from unicorn.training.config import ConfigError, load_deepspeed_config
from unicorn.training.trainer import Trainer

QUIET = dict(log=lambda *a: None)


def test_single_kill_and_resume(tiny_model, cpr_data, tmp_path):
    full = Trainer(make_config(tiny_model, cpr_data, str(tmp_path / "full"), steps=6), **QUIET)
    full.train()
    out = str(tmp_path / "killed")
    first = Trainer(make_config(tiny_model, cpr_data, out, steps=6, save_every=3, stop_after=4), **QUIET)
    first.train()  # "killed" after step 4: only the step-3 checkpoint survives
    assert [s for s, _ in list_checkpoints(os.path.join(out, "checkpoints"))] == [3]
    resumed = Trainer(make_config(tiny_model, cpr_data, out, steps=6, save_every=3, resume=True), **QUIET)
    assert resumed.step == 3
    resumed.train()
    assert losses(resumed.history) == losses(full.history)[3:]


def test_fsdp2_kill_and_resume(tiny_model, cpr_data, tmp_path):
    """With EMA weights kept (sharded per rank): the resumed run's exported average equals the uninterrupted one's."""
    from safetensors.torch import load_file

    kw = dict(model=tiny_model, data=cpr_data, backend="fsdp2", micro_batch=1, steps=5, ema_decay=0.9, export_ema=True)
    full = run_two_procs(out=str(tmp_path / "full"), export=str(tmp_path / "full-x"), **kw)
    out = str(tmp_path / "killed")
    run_two_procs(out=out, save_every=2, stop_after=3, **kw)
    resumed = run_two_procs(out=out, save_every=2, resume=True, export=str(tmp_path / "resumed-x"), **kw)
    assert len(resumed) == 3
    for a, b in zip(resumed, full[2:]):
        assert all(abs(a[k] - b[k]) <= 1e-6 * abs(b[k]) for k in b), (a, b)
    wa, wb = load_file(str(tmp_path / "full-x" / "model.safetensors")), load_file(str(tmp_path / "resumed-x" / "model.safetensors"))
    assert wa.keys() == wb.keys() and all(torch.equal(wa[k], wb[k]) for k in wa)


def test_resume_mismatch_is_explained(tiny_model, cpr_data, tmp_path):
    from unicorn.models.janus_tiny import write_random_janus_checkpoint

    out = str(tmp_path / "run")
    Trainer(make_config(tiny_model, cpr_data, out, steps=1), **QUIET).train()
    other = write_random_janus_checkpoint(str(tmp_path / "other"), preset="tiny", seed=0, text={"intermediate_size": 96})
    with pytest.raises(ResumeError, match="model_hash.*different model"):
        Trainer(make_config(other, cpr_data, out, steps=2, resume=True), **QUIET)
    with pytest.raises(ResumeError, match="world_size: checkpoint 1, this run 2"):
        from unicorn.training.checkpoint import check_compatible, latest_checkpoint

        trainer_meta = json.load(open(os.path.join(latest_checkpoint(os.path.join(out, "checkpoints")), "meta.json")))
        check_compatible(latest_checkpoint(os.path.join(out, "checkpoints")), {**trainer_meta, "world_size": 2})


def test_export_serves_same_logits(tiny_model, cpr_data, tmp_path):
    from unicorn import Engine

    trainer = Trainer(make_config(tiny_model, cpr_data, str(tmp_path / "run"), steps=3,
                                  export=str(tmp_path / "export")), **QUIET)
    trainer.train()
    trained = trainer.backend.module.janus.eval()
    served = Engine(str(tmp_path / "export")).model
    torch.manual_seed(0)
    ids = torch.randint(0, 300, (1, 9))
    pos = torch.arange(9)[None]
    with torch.no_grad():
        h1 = trained.forward_dense(trained.embed_text(ids), pos)
        h2 = served.forward_dense(served.embed_text(ids), pos)
        torch.testing.assert_close(served.text_logits(h2), trained.text_logits(h1), rtol=1e-6, atol=1e-6)
        torch.testing.assert_close(served.image_logits(h2), trained.image_logits(h1), rtol=1e-6, atol=1e-6)
        torch.testing.assert_close(served.embed_image_tokens(ids[0] % 90), trained.embed_image_tokens(ids[0] % 90))
    assert not torch.equal(served.lm_head.weight, Engine(tiny_model).model.lm_head.weight)  # it did train
    # A running engine on the source takes the trained weights from the export or from the trainer's state dict.
    want = served.state_dict()
    for source in (str(tmp_path / "export"), trainer.full_janus_state_dict()):
        engine = Engine(tiny_model, num_kv_blocks=8)
        engine.update_weights(source)
        for k, v in engine.model.state_dict().items():
            assert torch.equal(v, want[k]), k


def test_deepspeed_config_contradiction(tiny_model, cpr_data, tmp_path):
    ds = tmp_path / "ds.json"
    ds.write_text(json.dumps({"train_micro_batch_size_per_gpu": 8, "zero_optimization": {"stage": 2}}))
    cfg = make_config(tiny_model, cpr_data, str(tmp_path), backend="deepspeed", deepspeed_config=str(ds))
    with pytest.raises(ConfigError, match="train_micro_batch_size_per_gpu is 8 but --micro-batch gives 2"):
        load_deepspeed_config(cfg, 1, False)
    for bad, key in (({"gradient_accumulation_steps": 4}, "gradient_accumulation_steps"),
                     ({"gradient_clipping": 0.5}, "gradient_clipping"), ({"bf16": {"enabled": True}}, "bf16.enabled"),
                     ({"optimizer": {"type": "Adam"}}, "optimizer")):
        ds.write_text(json.dumps(bad))
        with pytest.raises(ConfigError, match=key):
            load_deepspeed_config(cfg, 1, False)
