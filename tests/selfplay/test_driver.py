"""The self-play loop end to end on the embedded toy model (small N, few tokens): what it writes follows the
recipe's rules, a foreign --out is refused, a judge that never scores is counted, and a run killed with SIGKILL
resumes to a byte-identical directory without redoing its written epochs."""
import json
import os
import re
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from unicorn.cpr.schema import read_records
from unicorn.selfplay.driver import SelfPlayConfig
from unicorn.selfplay.recipe import builtin_dir
from unicorn.selfplay.run import selfplay
from unicorn.selfplay.store import RunDir, RunDirError
from unicorn.toyworld.model import default_model_path

ROOT = Path(__file__).resolve().parents[2]
N, EPOCH = 4, 2


@pytest.fixture(scope="module")
def finished_run(tmp_path_factory):
    out = tmp_path_factory.mktemp("selfplay") / "run"
    summary = selfplay(str(default_model_path()), "toyworld", SelfPlayConfig(N, seed=0, epoch_size=EPOCH), str(out),
                       progress=False, log=lambda *_: None)
    return out, summary


def _files(root: Path) -> dict:
    return {str(p.relative_to(root)): p.read_bytes() for p in sorted(root.rglob("*"))
            if p.is_file() and p.name != "timing.json"}


def test_run_follows_the_recipe(finished_run):
    out, summary = finished_run
    epochs = [json.loads((out / "epochs" / f"epoch-{k:05d}.json").read_text()) for k in range(N // EPOCH)]
    slots = [s for e in epochs for s in e["slots"]]
    assert [s["slot"] for s in slots] == list(range(N))
    rollouts = [json.loads(line) for line in (out / "rollouts.jsonl").read_text().splitlines()]
    drawn = [s for s in slots if s["status"] == "done"]
    assert len(rollouts) == 8 * len(drawn) == summary["num_rollouts"] and drawn
    for r in rollouts:  # settings, raw reply and score recorded per image; the image exists
        assert (out / r["image"]).is_file() and len(r["vq_codes"]) == 64
        assert r["judge_raw"] is not None and {"cfg_scale", "seed", "temperature", "score"} <= set(r)
    assert sorted({r["cfg_scale"] for r in rollouts})[0] == 3.0 and max(r["cfg_scale"] for r in rollouts) == 8.0
    prompts = [s["prompt"] for s in drawn]
    assert len(set(prompts)) == len(prompts)  # no duplicates
    records = list(read_records(str(out)))
    by_prompt = {}
    for r in rollouts:
        by_prompt.setdefault(r["prompt_id"], []).append(r["score"])
    kept = {pid for pid, scores in by_prompt.items() if max(s for s in scores if s is not None) >= 7}
    assert {int(r.id.split("-")[1]) for r in records if r.kind == "t2i"} == kept
    for r in records:
        if r.kind == "t2i":
            assert r.score == max(s for s in by_prompt[int(r.id.split("-")[1])] if s is not None)
        if r.kind == "reflection":
            assert r.winner_score >= 9 and r.winner_score - r.loser_score >= 3
    assert summary["num_kept"] == len(kept)
    assert sum(summary["score_histogram"].values()) == len(rollouts)


def test_foreign_out_is_refused(finished_run, tmp_path):
    out, _ = finished_run
    with pytest.raises(RunDirError, match="its seed is 0, this one's 1"):
        selfplay(str(default_model_path()), "toyworld", SelfPlayConfig(N, seed=1, epoch_size=EPOCH), str(out),
                 progress=False, log=lambda *_: None)
    other = tmp_path / "other"
    other.mkdir()
    (other / "notes.txt").write_text("mine")
    from unicorn.cli import main

    assert main(["selfplay", "--num-prompts", "4", "--out", str(other), "--no-progress"]) == 2
    assert (other / "notes.txt").read_text() == "mine" and not (other / "run.json").exists()


def test_a_judge_that_never_scores_is_counted_not_fatal(tmp_path):
    recipe = tmp_path / "recipe"
    shutil.copytree(builtin_dir() / "toyworld", recipe)
    cfg = json.loads((recipe / "recipe.json").read_text())
    cfg["judge"]["max_tokens"] = 2  # stops before "Score: N"
    (recipe / "recipe.json").write_text(json.dumps(cfg))
    summary = selfplay(str(default_model_path()), str(recipe), SelfPlayConfig(2, seed=0, epoch_size=2),
                       str(tmp_path / "run"), progress=False, log=lambda *_: None)
    assert summary["num_rollouts"] > 0 and summary["parse_failures"] == summary["num_rollouts"]
    assert summary["num_kept"] == 0 and summary["cpr_counts"]["t2i"] == 0
    assert summary["score_histogram"] == {"unparsed": summary["num_rollouts"]}


@pytest.mark.slow
def test_kill_9_then_resume_is_byte_identical(finished_run, tmp_path):
    reference, _ = finished_run
    out = tmp_path / "run"
    cmd = [sys.executable, "-m", "unicorn.cli", "selfplay", "--num-prompts", str(N), "--epoch-size", str(EPOCH),
           "--out", str(out), "--no-progress"]
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    proc = subprocess.Popen(cmd, cwd=ROOT, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    first = out / "epochs" / "epoch-00000.json"
    while not first.exists() and proc.poll() is None:
        time.sleep(0.05)
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    assert first.exists() and not (out / "manifest.json").exists(), "the run finished before it could be killed"
    written = first.stat().st_mtime_ns
    logged = []
    selfplay(str(default_model_path()), "toyworld", SelfPlayConfig(N, seed=0, epoch_size=EPOCH), str(out),
             progress=False, log=logged.append)  # the same command, resumed in this process
    # the kill lands after the first epoch file: before the second (1 of 2) or, where both finish close together,
    # between the second and the manifest (2 of 2); either way nothing written is redone
    assert any(re.search(r"resumed with [12] of 2 epochs", line) for line in logged), logged
    assert first.stat().st_mtime_ns == written  # the written epoch was not redone
    assert _files(out) == _files(reference)


def test_cpr_rebuilds_with_another_recipe(finished_run, tmp_path):
    out, summary = finished_run
    from unicorn.selfplay.run import rebuild_cpr

    same = rebuild_cpr(str(out), str(tmp_path / "same"), log=lambda *_: None)
    for shard in json.loads((out / "manifest.json").read_text())["shards"]:
        assert (tmp_path / "same" / shard).read_bytes() == (out / shard).read_bytes()
    assert same["cpr_counts"] == summary["cpr_counts"]
    strict = tmp_path / "strict"
    shutil.copytree(out / "recipe", strict)
    cfg = json.loads((strict / "recipe.json").read_text())
    cfg["thresholds"]["keep_min_best"] = 11 - 1  # only perfect prompts are kept
    (strict / "recipe.json").write_text(json.dumps(cfg))
    rebuilt = rebuild_cpr(str(out), str(tmp_path / "strict-out"), recipe_name=str(strict), log=lambda *_: None)
    records = list(read_records(str(tmp_path / "strict-out")))  # every image the records use is there
    assert all(r.score == 10 for r in records if r.kind == "t2i")
    assert rebuilt["cpr_counts"]["t2i"] <= summary["cpr_counts"]["t2i"]
    with pytest.raises(RunDirError, match="run directory itself"):
        rebuild_cpr(str(out), str(out), log=lambda *_: None)


def test_a_cpr_build_killed_half_way_resumes_to_the_same_bytes(finished_run, tmp_path, monkeypatch):
    """The data set of a run is streamed into shards: a crash part-way through leaves committed shards that the
    re-run keeps, and the result is byte-identical to an uninterrupted build."""
    from unicorn.cpr import shards
    from unicorn.selfplay import run as run_mod
    from unicorn.selfplay.recipe import load_recipe

    out, _ = finished_run
    monkeypatch.setattr(run_mod, "SHARD_SIZE", 2)
    recipe, cfg = load_recipe(str(out / "recipe")), SelfPlayConfig(N, seed=0, epoch_size=EPOCH)
    total = run_mod.finalize(RunDir(out), recipe, cfg, source_model="m", dest=tmp_path / "ref")["cpr_counts"]
    real, added = shards.DatasetWriter.add, []
    assert sum(total.values()) >= 4, total

    def crashes(self, record):
        if len(added) == sum(total.values()) // 2 + 1:
            raise KeyboardInterrupt
        added.append(record.id)
        real(self, record)

    monkeypatch.setattr(shards.DatasetWriter, "add", crashes)
    with pytest.raises(KeyboardInterrupt):
        run_mod.finalize(RunDir(out), recipe, cfg, source_model="m", dest=tmp_path / "resumed")
    monkeypatch.setattr(shards.DatasetWriter, "add", real)
    assert (tmp_path / "resumed" / ".cpr-progress").is_dir() and not (tmp_path / "resumed" / "manifest.json").exists()
    run_mod.finalize(RunDir(out), recipe, cfg, source_model="m", dest=tmp_path / "resumed")
    assert _files(tmp_path / "resumed") == _files(tmp_path / "ref")
    from unicorn.cpr.shards import verify_dataset

    assert verify_dataset(str(tmp_path / "ref")) == []


def _one_worker_reference(tmp_path: Path, env: dict) -> Path:
    """The one-worker run, in a subprocess at the workers' thread count (``env``'s OMP_NUM_THREADS): the VQ decoder's
    convolutions round some pixels differently with another number of threads (the image tokens do not depend on
    it), so an in-process reference at this process's count would not do."""
    reference = tmp_path / "one-worker"
    one = [sys.executable, "-m", "unicorn.cli", "selfplay", "--num-prompts", str(N), "--epoch-size", str(EPOCH),
           "--out", str(reference), "--no-progress", "--num-kv-blocks", "2048"]
    made = subprocess.run(one, cwd=ROOT, env=env, capture_output=True, text=True, timeout=300)
    assert made.returncode == 0, made.stderr[-2000:]
    return reference


@pytest.mark.slow
def test_two_workers_under_torchrun_killed_then_resumed_equal_one_worker(tmp_path):
    """2 processes under torchrun (one engine each, gloo), SIGKILLed (the launcher and both workers) once the first
    epoch part is written, then the same command again: every file of the run equals the one-worker run's
    (run.json, which records the worker count, and timing.json aside)."""
    out = tmp_path / "run"
    cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node", "2", "-m", "unicorn.cli",
           "selfplay", "--num-prompts", str(N), "--epoch-size", str(EPOCH), "--out", str(out), "--no-progress",
           "--workers", "2", "--num-kv-blocks", "2048"]
    env = {**os.environ, "PYTHONPATH": str(ROOT), "OMP_NUM_THREADS": "1"}
    reference = _one_worker_reference(tmp_path, env)
    proc = subprocess.Popen(cmd, cwd=ROOT, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
                            start_new_session=True)
    parts = out / "epochs" / "parts"
    while not (parts.is_dir() and any(parts.glob("epoch-*.json"))) and proc.poll() is None:
        time.sleep(0.02)
    os.killpg(proc.pid, signal.SIGKILL)
    proc.wait()
    assert not (out / "manifest.json").exists(), "the run finished before it could be killed"
    killed_at = sorted(p.name for p in parts.glob("epoch-*.json"))
    done = subprocess.run(cmd, cwd=ROOT, env=env, capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr[-2000:]
    assert killed_at and not parts.exists()  # merged into epoch files by rank 0
    assert json.loads((out / "run.json").read_text())["config"]["workers"] == 2
    got, want = _files(out), _files(reference)
    got.pop("run.json"), want.pop("run.json")
    assert got.keys() == want.keys()
    assert [k for k in got if got[k] != want[k]] == []


@pytest.mark.slow
def test_two_ray_actors_equal_one_worker(tmp_path):
    """The same job as 2 Ray actors (one engine each): every file equals the one-worker run's (run.json aside). Both
    run as subprocesses at one torch thread (a Ray actor of one CPU keeps the OMP_NUM_THREADS it inherits; Ray sets
    it only when unset), as the torchrun test does."""
    pytest.importorskip("ray")
    env = {**os.environ, "PYTHONPATH": str(ROOT), "OMP_NUM_THREADS": "1"}
    reference = _one_worker_reference(tmp_path, env)
    out = tmp_path / "run"
    cmd = [sys.executable, "-m", "unicorn.cli", "selfplay", "--num-prompts", str(N), "--epoch-size", str(EPOCH),
           "--out", str(out), "--no-progress", "--workers", "2", "--ray", "--num-kv-blocks", "2048"]
    done = subprocess.run(cmd, cwd=ROOT, env=env, capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, done.stderr[-2000:]
    assert json.loads((out / "run.json").read_text())["config"]["workers"] == 2
    got, want = _files(out), _files(reference)
    got.pop("run.json"), want.pop("run.json")
    assert got.keys() == want.keys()
    assert [k for k in got if got[k] != want[k]] == []
