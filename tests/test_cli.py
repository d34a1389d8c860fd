"""The command line: the demo runs end to end, and bad input gives one line (no traceback) and status 2."""
import json
import os
import subprocess
import sys

import pytest

from unicorn.cli import main
from unicorn.models.janus_tiny import write_random_janus_checkpoint


@pytest.fixture(scope="module")
def ckpt(tmp_path_factory):
    path = tmp_path_factory.mktemp("cli") / "janus"
    write_random_janus_checkpoint(path, preset="tiny", seed=0)
    return str(path)


def test_demo_on_the_shipped_model_writes_images_and_judgements(tmp_path, capsys):
    assert main(["demo", "--out", str(tmp_path / "out"), "--n", "2"]) == 0
    records = [json.loads(line) for line in (tmp_path / "out" / "results.jsonl").read_text().splitlines()]
    assert len(records) == 8
    for record in records:
        assert (tmp_path / "out" / record["image"]).exists()
        assert "Score:" in record["judgement"] and 0 <= record["oracle_score"] <= 10
    out = capsys.readouterr().out
    assert "toyworld-janus" in out and "img/s" in out


def one_error_line(capsys):
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith("unicorn: error:"), err
    return err[0]


def test_missing_checkpoint_lists_what_was_expected(tmp_path, capsys):
    (tmp_path / "empty").mkdir()
    assert main(["generate", "--model", str(tmp_path / "empty"), "hi"]) == 2
    line = one_error_line(capsys)
    assert "config.json" in line and "tokenizer.json" in line


def test_missing_and_misshaped_tensors_are_named(ckpt, tmp_path, capsys):
    import shutil

    from safetensors.torch import load_file, save_file

    broken = tmp_path / "broken"
    shutil.copytree(ckpt, broken)
    tensors = load_file(str(broken / "model.safetensors"))
    key = next(k for k in tensors if k.endswith("q_proj.weight"))
    save_file({k: v for k, v in tensors.items() if k != key}, str(broken / "model.safetensors"))
    assert main(["generate", "--model", str(broken), "hi"]) == 2
    assert key in one_error_line(capsys)
    tensors[key] = tensors[key][:, :-1].contiguous()
    save_file(tensors, str(broken / "model.safetensors"))
    assert main(["generate", "--model", str(broken), "hi"]) == 2
    line = one_error_line(capsys)
    assert key in line and "shape" in line


@pytest.mark.parametrize("args,match", [
    (["--n", "0"], "n must be"),
    (["--temperature", "-1"], "temperature"),
])
def test_bad_sampling_settings(ckpt, args, match, capsys):
    assert main(["generate", "--model", ckpt, *args, "hi"]) == 2
    assert match in one_error_line(capsys)


def test_a_prompt_longer_than_the_context_fails_alone(ckpt, capsys):
    long_prompt = "many words " * 400
    assert main(["generate", "--model", ckpt, "--max-tokens", "3", "short one", long_prompt]) == 0
    out = capsys.readouterr().out.strip().splitlines()
    assert len(out) == 2 and out[0].startswith("{") and out[1].startswith("error:") and "context" in out[1]


def test_cli_process_prints_no_traceback(tmp_path):
    env = {**os.environ, "PYTHONPATH": os.getcwd()}
    proc = subprocess.run([sys.executable, "-m", "unicorn.cli", "generate-images", "--model", str(tmp_path / "nope"),
                           "x"], capture_output=True, text=True, env=env)
    assert proc.returncode == 2
    assert "Traceback" not in proc.stderr and proc.stderr.count("\n") == 1 and "does not exist" in proc.stderr
