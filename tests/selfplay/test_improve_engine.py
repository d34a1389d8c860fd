"""``unicorn improve`` keeps one engine across stages and rounds (sleep for training, wake up with the export loaded
in place): two rounds so, and two rounds with a fresh engine per stage, give the same bytes in every round directory
(self-play runs, CPR shards and manifests, rollouts, exported weights, evaluations, reports)."""
import hashlib
import json
from pathlib import Path

import pytest

from unicorn.selfplay.improve import ImproveConfig, KeptEngine, TrainSettings, improve
from unicorn.toyworld.model import default_model_path

EVAL = {"split": "val", "prompts_per_category": 1, "scenes_per_category": 1, "drawings": 2, "seeds": [0],
        "num_kv_blocks": 512}


def _tree(root: Path) -> dict:
    """sha256 of every file (drawn images included) but the wall-clock ones: timing, the trainer's metrics, its
    resumable checkpoints, and the plot (matplotlib stamps it)."""
    skip = ("timing.json", "metrics.jsonl", "improve.png")
    return {str(p.relative_to(root)): hashlib.sha256(p.read_bytes().replace(str(root).encode(), b"OUT")).hexdigest()
            for p in sorted(root.rglob("*")) if p.is_file() and p.name not in skip and "checkpoints" not in p.parts}


@pytest.mark.slow
def test_kept_engine_equals_a_fresh_engine_per_stage(tmp_path, monkeypatch):
    cfg = ImproveConfig(model=str(default_model_path()), recipe="toyworld", num_prompts=4, epoch_size=2, seed=0,
                        train=TrainSettings(steps=2, micro_batch=2, warmup=1, ema=0.5), evaluator="toyworld",
                        eval_options=EVAL, control=True, num_kv_blocks=512)
    logs = {"kept": [], "fresh": [], "kept-level-2": []}
    for name, keep in (("kept", True), ("fresh", False)):
        improve(cfg, 2, str(tmp_path / name), log=logs[name].append, progress=False, keep_engine=keep)
    kept, fresh = _tree(tmp_path / "kept"), _tree(tmp_path / "fresh")
    assert sorted(kept) == sorted(fresh)
    assert {p for p in kept if kept[p] != fresh[p]} == set()
    # a GPU engine sleeps at level 2 (weights discarded, the export loaded on waking): the same path on CPU
    init = KeptEngine.__init__

    def level_2(self, *args, **kwargs):
        init(self, *args, **kwargs)
        self.sleep_level = 2

    monkeypatch.setattr(KeptEngine, "__init__", level_2)
    improve(cfg, 2, str(tmp_path / "kept-level-2"), log=logs["kept-level-2"].append, progress=False)
    assert _tree(tmp_path / "kept-level-2") == fresh
    assert any("engine wake_up+load" in line for line in logs["kept-level-2"])
    for sub in ("round-01/model/model.safetensors", "round-02/selfplay/rollouts.jsonl",
                "round-02/cpr/manifest.json", "round-02/eval/eval.json", "round-02/report.json"):
        assert sub in kept
    assert any(p.startswith("round-02/selfplay/") and p.endswith(".png") for p in kept)
    assert any(p.startswith("round-02/cpr/data-") and p.endswith(".parquet") for p in kept)

    # one start; every later stage on the same engine, weights loaded in place after each training
    actions = [a["action"] for r in (1, 2)
               for a in json.loads((tmp_path / "kept" / f"round-{r:02d}" / "timing.json").read_text())["kept_engine"]]
    assert actions.count("start") == 1 and actions[0] == "start"
    assert "wake_up+update_weights" in actions and "sleep(level=1)" in actions
    assert not any("fresh engine" in line for line in logs["kept"])
    fresh_timing = json.loads((tmp_path / "fresh" / "round-01" / "timing.json").read_text())
    assert fresh_timing["engine"] == "fresh" and fresh_timing["kept_engine"] == []
    assert any("fresh engine (keep_engine=False)" in line for line in logs["fresh"])
