"""bench/gpu/run.sh --smoke: the GPU script's code paths (both parts, every provider) with tiny presets on the
CPU, rows and log in a temporary directory. The script itself needs a lent GPU; this checks it is ready."""
from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]


def _rows(path: Path) -> list[dict]:
    rows = [json.loads(line) for line in path.read_text().splitlines() if line.strip()]
    for row in rows:
        assert {"bench", "provider", "metric", "value", "unit", "config", "device", "versions", "time"} <= set(row), row
        assert row["device"].startswith("cpu:"), row["device"]
    return rows


def _has(rows: list[dict], provider: str, metric: str, **config) -> bool:
    return any(r["provider"] == provider and r["metric"] == metric and r["value"] > 0
               and all(r["config"].get(k) == v for k, v in config.items()) for r in rows)


@pytest.mark.slow
def test_gpu_bench_smoke(tmp_path):
    env = {**os.environ, "PYTHON": sys.executable, "UNICORN_BENCH_OUT": str(tmp_path), "OMP_NUM_THREADS": "1"}
    proc = subprocess.run(["bash", str(ROOT / "bench" / "gpu" / "run.sh"), "all", "--smoke"], cwd=ROOT, env=env,
                          capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stdout[-4000:] + proc.stderr[-2000:]

    janus = _rows(tmp_path / "janus_images.jsonl")
    assert len({r["time"] for r in janus}) == 1  # one run stamp, though written in parts
    for prompts in (2, 3):
        for provider in ("unicorn", "transformers-batched"):
            assert _has(janus, provider, "img_per_s_tokens", prompts=prompts)
            assert _has(janus, provider, "decode_read_gbs", prompts=prompts)
            assert _has(janus, provider, "peak_rss_gib", prompts=prompts)
        assert _has(janus, "unicorn", "kv_pool_gib", prompts=prompts)
        assert _has(janus, "unicorn", "speedup_vs_transformers", prompts=prompts)
        assert _has(janus, "unicorn", "speedup_end_to_end", prompts=prompts)
        assert _has(janus, "limit-measured", "img_per_s_kv_bandwidth", prompts=prompts)
    assert _has(janus, "transformers-batched", "img_per_s_tokens", prompts=3, transformers_timed_prompts=2)

    bagel = _rows(tmp_path / "bagel_t2i.jsonl")
    assert len({r["time"] for r in bagel}) == 1
    for size in (64, 32):
        for provider in ("official_loop", "engine"):
            for metric in ("images_per_s", "s_per_image", "denoise_tflops", "peak_rss_gib"):
                assert _has(bagel, provider, metric, size=size), (provider, metric, size)
        assert _has(bagel, "engine", "speedup_vs_official_loop", size=size)
        assert _has(bagel, "workload", "denoise_tflop_per_image", size=size)
        assert _has(bagel, "limit-measured", "s_per_image", size=size)

    logs = list((tmp_path / "gpu").glob("*-all-smoke.log"))
    assert len(logs) == 1
    text = logs[0].read_text()
    assert "janus: ok" in text and "bagel: ok" in text, text[-2000:]


def test_random_janus_weights_equal_in_both_providers(tmp_path, monkeypatch):
    """The bench's on-device random weights: transformers' model gets the engine model's values, name by name."""
    import torch

    monkeypatch.syspath_prepend(str(ROOT / "bench"))
    from janus_hf import build_transformers_janus

    from unicorn.models.janus_checkpoint import name_to_hf_key
    from unicorn.models.janus_tiny import build_random_janus, write_janus_files

    write_janus_files(str(tmp_path), preset="tiny")
    ours = build_random_janus(str(tmp_path), device="cpu", dtype=torch.bfloat16, seed=3)
    theirs = dict(build_transformers_janus(str(tmp_path), "cpu", torch.bfloat16, "device", seed=3).named_parameters())
    names = dict(ours.named_parameters())
    assert len(names) == len(theirs)
    for name, p in names.items():
        assert p.dtype == torch.bfloat16 and torch.equal(p, theirs[name_to_hf_key(name)]), name
