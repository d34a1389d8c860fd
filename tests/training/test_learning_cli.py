import json
import os

from helpers import make_config
from unicorn.training.cli import main
from unicorn.training.trainer import Trainer


def test_loss_per_kind_drops(tiny_model, tmp_path):
    """A real learning test: 8 coloured shapes x 5 kinds (structured VQ codes for the image targets), 120 steps;
    every kind's loss ends below half its start."""
    from unicorn.training.synthetic import write_synthetic_cpr

    data = str(tmp_path / "data")
    write_synthetic_cpr(data, image_size=32, codes_grid=4)
    cfg = make_config(tiny_model, data, str(tmp_path / "run"), steps=120, micro_batch=1, seq_len=512,
                      optim={"lr": 1e-2, "warmup": 10, "schedule": "cosine"}, save_every=10**6)
    trainer = Trainer(cfg, log=lambda *a: None)
    trainer.train()
    first, last = {}, {}
    for row in trainer.history[:5]:
        for k, v in row["loss_per_kind"].items():
            first.setdefault(k, v)
    for row in trainer.history[-10:]:
        last.update(row["loss_per_kind"])
    assert set(first) == {"t2i", "caption", "judgement", "reflection", "text"}
    for k in first:
        assert last[k] < 0.5 * first[k], (k, first[k], last[k])


def test_cli_runs_and_reports_bad_input(tiny_model, cpr_data, tmp_path, capsys):
    out = str(tmp_path / "run")
    rc = main(["--model", tiny_model, "--data", cpr_data, "--out", out, "--steps", "2", "--seq-len", "512",
               "--micro-batch", "2", "--lr", "1e-3", "--export", str(tmp_path / "exp")])
    assert rc == 0
    captured = capsys.readouterr().out
    assert "step 2/2 | loss" in captured and "summary:" in captured
    rows = [json.loads(line) for line in open(os.path.join(out, "metrics.jsonl"))]
    assert [r["step"] for r in rows] == [1, 2] and "loss_per_kind" in rows[0]
    assert os.path.exists(tmp_path / "exp" / "model.safetensors")

    # a malformed line: stop names file and line; skip goes on
    bad = tmp_path / "bad"
    os.makedirs(bad)
    for name in os.listdir(cpr_data):
        src = os.path.join(cpr_data, name)
        os.symlink(src, bad / name) if name != "data-00001.jsonl" else None
    lines = open(os.path.join(cpr_data, "data-00001.jsonl")).read().splitlines()
    (bad / "data-00001.jsonl").write_text("\n".join(lines[:2] + ['{"kind": "t2i", "id": 5}'] + lines[2:]) + "\n")
    args = ["--model", tiny_model, "--data", str(bad), "--out", str(tmp_path / "b"), "--steps", "1", "--seq-len", "512"]
    assert main(args) == 2
    err = capsys.readouterr().err
    assert "data-00001.jsonl:3" in err and "field 'image'" in err and err.startswith("error:")
    assert main(args + ["--on-bad-record", "skip"]) == 0
    assert "skipped" in capsys.readouterr().out

    assert main(["--model", str(tmp_path / "nope"), "--data", cpr_data, "--out", out]) == 2
    assert "--model" in capsys.readouterr().err
