"""Loading as lenient as transformers, one-line errors for unreadable weights, one CLI tree, and the import
directions (engine -> no concrete model, kernels -> attention) with the engine's kernels choice honoured."""
import argparse
import ast
import json
import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from unicorn import Engine, ImageGenParams, SamplingParams
from unicorn.cli import build_parser, main
from unicorn.models import CheckpointError, load_model
from unicorn.models.janus_tiny import write_random_janus_checkpoint

from janus_reference import BOI, BOS, EOS, PAD, make_hf_janus

ROOT = Path(__file__).resolve().parents[1]
ENV = {**os.environ, "PYTHONPATH": str(ROOT)}


# ---- lenient loading --------------------------------------------------------------------------------------------

def _save_hf(path, generation_kwargs: dict):
    from transformers import GenerationConfig

    model = make_hf_janus("gqa48", seed=1)
    model.generation_config = GenerationConfig(bos_token_id=BOS, eos_token_id=EOS, pad_token_id=PAD,
                                               generation_kwargs=generation_kwargs)
    model.save_pretrained(path)
    assert not any(name.startswith("tokenizer") for name in os.listdir(path))
    gen = json.loads((Path(path) / "generation_config.json").read_text())
    assert "eoi_token_id" not in json.dumps(gen)
    return str(path)


@torch.no_grad()
def test_checkpoint_without_eoi_and_tokenizer_runs_as_in_transformers(tmp_path):
    from transformers import JanusForConditionalGeneration

    path = _save_hf(tmp_path / "no_eoi", {"boi_token_id": BOI})
    hf = JanusForConditionalGeneration.from_pretrained(path).eval()
    prompt = [BOS, 10, 11, 12]
    ref = hf.generate(torch.tensor([prompt]), max_new_tokens=5, do_sample=False)[0, len(prompt):].tolist()
    image_ids = torch.tensor([prompt + [BOI]])
    hf_codes = hf.generate(image_ids, attention_mask=torch.ones_like(image_ids), generation_mode="image",
                           do_sample=True, guidance_scale=2.0)
    assert hf_codes.shape == (1, 16)  # transformers draws an image with no <end_of_image> id

    engine = Engine(path, num_kv_blocks=64)
    assert engine.tokenizer is None and engine.spec.eoi_token_id is None and engine.spec.boi_token_id == BOI
    text = engine.generate([prompt], SamplingParams(temperature=0.0, max_tokens=5))[0]
    assert text.error is None and text.samples[0].token_ids == ref
    image = engine.generate_images([prompt + [BOI]], ImageGenParams(n=2, cfg_scale=2.0, seed=0))[0]
    assert image.error is None and tuple(image.image_tokens.shape) == (2, 16)
    # str prompts need a tokenizer, and say so per request
    assert "tokenizer" in engine.generate("hello", SamplingParams(max_tokens=2))[0].error


def test_checkpoint_without_boi_runs_every_prompt_form_that_does_not_need_it(tmp_path):
    path = _save_hf(tmp_path / "no_boi", {})
    engine = Engine(path, num_kv_blocks=64)
    assert engine.spec.boi_token_id is None
    assert engine.generate([[BOS, 10, 11]], SamplingParams(max_tokens=3))[0].error is None
    no_cfg = engine.generate_images([[BOS, 10, 11, BOI]], ImageGenParams(n=1, cfg_scale=1.0, seed=0))[0]
    assert no_cfg.error is None and tuple(no_cfg.image_tokens.shape) == (1, 16)
    with_cfg = engine.generate_images([[BOS, 10, 11, BOI]], ImageGenParams(n=1, cfg_scale=3.0))[0]
    assert "boi_token_id" in with_cfg.error and "cfg_scale=1" in with_cfg.error


@pytest.fixture(scope="module")
def tiny(tmp_path_factory):
    return write_random_janus_checkpoint(str(tmp_path_factory.mktemp("tiny")), preset="tiny", seed=0)


def _truncated_copy(src, dst, name):
    shutil.copytree(src, dst)
    file = Path(dst) / name
    os.truncate(file, file.stat().st_size // 2)
    return str(dst), str(file)


def test_truncated_safetensors_gives_one_cli_line_naming_the_file(tiny, tmp_path, capsys):
    path, file = _truncated_copy(tiny, tmp_path / "cut", "model.safetensors")
    assert main(["generate", "--model", path, "hi"]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith("unicorn: error:") and file in err[0], err
    proc = subprocess.run([sys.executable, "-m", "unicorn.cli", "generate-images", "--model", path, "x"],
                          capture_output=True, text=True, env=ENV)
    assert proc.returncode == 2 and "Traceback" not in proc.stderr
    assert proc.stderr.count("\n") == 1 and file in proc.stderr


def test_truncated_bin_shard_names_the_file(tiny, tmp_path):
    from safetensors.torch import load_file

    path = tmp_path / "bin"
    shutil.copytree(tiny, path)
    torch.save(load_file(str(path / "model.safetensors")), path / "pytorch_model.bin")
    (path / "model.safetensors").unlink()
    load_model(str(path))  # the intact .bin loads
    file = path / "pytorch_model.bin"
    os.truncate(file, file.stat().st_size // 2)
    with pytest.raises(CheckpointError, match=re.escape(str(file))):
        load_model(str(path))


# ---- one CLI tree -----------------------------------------------------------------------------------------------

COMMANDS = {"demo", "generate", "generate-images", "train", "toyworld", "selfplay", "cpr", "improve", "unicycle"}


def test_help_lists_every_subcommand():
    sub = next(a for a in build_parser()._actions if isinstance(a, argparse._SubParsersAction))
    assert set(sub.choices) == COMMANDS
    proc = subprocess.run([sys.executable, "-m", "unicorn.cli", "--help"], capture_output=True, text=True, env=ENV)
    assert proc.returncode == 0
    listed = set(re.findall(r"^ {4}(\S+)", proc.stdout.split("positional arguments:")[1], re.M))
    assert listed == COMMANDS, proc.stdout


@pytest.mark.parametrize("argv,prog", [
    (["-m", "unicorn.cli", "train", "--help"], "unicorn train"),
    (["-m", "unicorn.training.cli", "--help"], "unicorn train"),  # the torchrun / deepspeed entry
    (["-m", "unicorn.cli", "toyworld", "eval", "--help"], "unicorn toyworld eval"),
    (["-m", "unicorn.toyworld.cli", "pretrain", "--help"], "unicorn toyworld pretrain"),
])
def test_sub_clis_work_from_the_tree_and_alone(argv, prog):
    proc = subprocess.run([sys.executable, *argv], capture_output=True, text=True, env=ENV)
    assert proc.returncode == 0 and proc.stdout.startswith(f"usage: {prog}"), proc.stderr


def test_train_through_the_tree_reports_bad_input_in_one_line(tmp_path, capsys):
    code = main(["train", "--model", str(tmp_path / "none"), "--data", str(tmp_path / "none"),
                 "--out", str(tmp_path / "run"), "--steps", "1"])
    assert code == 2 and len(capsys.readouterr().err.strip().splitlines()) == 1


def test_generate_commands_default_to_the_embedded_model(tmp_path, capsys):
    assert main(["generate", "--max-tokens", "3", "a red circle"]) == 0
    line = capsys.readouterr().out.strip().splitlines()
    assert len(line) == 1 and "finish_reason" in json.loads(line[0])
    assert main(["generate-images", "--n", "1", "--out", str(tmp_path), "a red circle"]) == 0
    assert len(list(tmp_path.glob("*.png"))) == 1


# ---- import directions ------------------------------------------------------------------------------------------

def _imported_modules(file: Path) -> set[str]:
    """Every module an import statement in ``file`` names (top level or inside functions)."""
    package = ".".join(file.relative_to(ROOT).with_suffix("").parts[:-1])
    names = set()
    for node in ast.walk(ast.parse(file.read_text())):
        if isinstance(node, ast.Import):
            names.update(a.name for a in node.names)
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                parts = package.split(".")[: len(package.split(".")) - node.level + 1]
                base = ".".join(parts + ([base] if base else []))
            names.add(base)
            names.update(f"{base}.{a.name}" for a in node.names)
    return names


def test_attention_never_imports_kernels():
    files = sorted((ROOT / "unicorn" / "attention").glob("*.py"))
    assert files
    offenders = {f.name: sorted(m for m in _imported_modules(f) if m.startswith("unicorn.kernels"))
                 for f in files}
    assert not any(offenders.values()), offenders


def test_engine_names_no_concrete_model_statically():
    files = sorted((ROOT / "unicorn" / "engine").glob("*.py"))
    offenders = {f.name: sorted(m for m in _imported_modules(f) if m.startswith("unicorn.models.janus"))
                 for f in files}
    assert not any(offenders.values()), offenders


ENGINE_IMPORT_CHECK = r"""
import importlib, pkgutil, sys
import unicorn.engine
for info in pkgutil.iter_modules(unicorn.engine.__path__):
    importlib.import_module("unicorn.engine." + info.name)
import torch
from unicorn.engine.prompts import PromptProcessor
from unicorn.models.spec import ModelSpec

class Format:
    def understanding_prompt(self, messages, num_image_tokens, system_prompt=None):
        return "U" + "I" * num_image_tokens + messages[-1]["content"][-1]["text"]
    def generation_prompt(self, text):
        return "G" + text + "B"

class Tokenizer:
    def encode(self, text, add_bos=True):
        ids = [{"I": 7, "B": 5}.get(c, 10 + ord(c) % 20) for c in text]
        return [1] + ids if add_bos else ids

spec = ModelSpec("other", 1, 1, 1, 4, 4, 64, 16, 128, 3, 8, 1, 2, 0, 7, 5, None, torch.float32)
prompts = PromptProcessor(spec, Tokenizer(), lambda images: torch.zeros(len(images), 3, 8, 8), "fake",
                          prompt_format=Format())
ids, images = prompts.text({"messages": [{"role": "user", "content": [
    {"type": "image", "image": torch.zeros(3, 8, 8)}, {"type": "text", "text": "hi"}]}]})
assert ids[:5] == [1, 10 + ord("U") % 20, 7, 7, 7] and images[0].offset == 2, ids
assert prompts.image("x")[-1] == 5 and prompts.unconditional([1, 9, 5]) == [1, 0, 5]
janus = sorted(m for m in sys.modules if m.startswith("unicorn.models.janus"))
assert not janus, janus
from unicorn.toyworld.model import default_model_path
from unicorn.engine.llm_engine import Engine
Engine(str(default_model_path()), num_kv_blocks=8)
assert "unicorn.models.janus" in sys.modules  # reached through the registry at load time
print("ok")
"""


def test_engine_modules_and_prompts_import_no_concrete_model():
    proc = subprocess.run([sys.executable, "-c", ENGINE_IMPORT_CHECK], capture_output=True, text=True, env=ENV)
    assert proc.returncode == 0 and proc.stdout.strip() == "ok", proc.stderr[-2000:]


# ---- kernels="torch" on CUDA --------------------------------------------------------------------------------------

def test_kernels_torch_reaches_every_dispatcher(monkeypatch):
    """Pretend every tensor is a CUDA tensor Triton can run on; the launchers are spies. An engine with
    kernels="torch" must never reach them (the dispatch used to look at the tensor only)."""
    from unicorn.kernels import dispatch, rmsnorm, swiglu
    from unicorn.toyworld.model import default_model_path

    calls = []

    def spy(name, ref):
        def launcher(*args):
            calls.append(name)
            return ref(*args)
        return launcher

    monkeypatch.setattr(dispatch, "_triton_can_run", lambda tensor: True)
    monkeypatch.setattr(rmsnorm, "rms_norm", spy("rms_norm", rmsnorm.rms_norm_ref))
    monkeypatch.setattr(swiglu, "swiglu", spy("swiglu", swiglu.swiglu_ref))
    monkeypatch.setattr(swiglu, "silu_and_mul", spy("silu_and_mul", swiglu.silu_and_mul_ref))

    engine = Engine(str(default_model_path()), kernels="torch", num_kv_blocks=32)
    assert engine.kernels == "torch"
    out = engine.generate("a red circle", SamplingParams(max_tokens=3))[0]
    images = engine.generate_images("a red circle", ImageGenParams(n=1, seed=0))[0]
    assert out.error is None and images.error is None
    assert calls == []
    x = torch.randn(2, 8)
    with dispatch.kernel_choice("triton"):  # the spies do catch a dispatch that picks the kernels
        dispatch.rms_norm(x, torch.ones(8))
    dispatch.swiglu(x, x)  # outside an engine the choice is "auto"
    assert calls == ["rms_norm", "swiglu"]
    with pytest.raises(ValueError, match="kernels must be"):
        with dispatch.kernel_choice("fast"):
            pass
