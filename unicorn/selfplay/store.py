"""The self-play run directory: every file written atomically, completed epochs kept, another run's data refused.

    run.json                      what made the run (model, recipe digest, seed, sizes): a resume must match it
    recipe/                       a copy of the recipe's files
    epochs/epoch-00000.json       one completed epoch: its slots, prompts, rollouts and judge replies
    epochs/parts/                 with several workers, each one's part of an epoch until rank 0 merges them
    images/00000/p000000-r0.png   every drawn image (epoch / prompt id / rollout)
    rollouts.jsonl                the rollouts table: every image with its settings, sha256, raw judge reply and score
    manifest.json, data-*.parquet the CPR data set (unicorn/cpr/schema.py, shards.py): per-kind Parquet shards, the
                                  sha256 of every shard, image and of rollouts.jsonl; images referenced from images/
    summary.json                  the run's figures (deterministic); timing.json: the wall-clock ones
"""
from __future__ import annotations

import hashlib
import json
import os
import shutil
from pathlib import Path

from unicorn.cpr.shards import atomic_write

RUN_FORMAT = "unicorn-selfplay"
RUN_VERSION = 1


def check_same_run(file: Path, fmt: str, what: str, config: dict) -> None:
    """``file`` (a run's JSON record) was written by a ``what`` of format ``fmt`` with this same ``config``; else a
    one-line RunDirError naming the file or the first differing key."""
    try:
        found = json.loads(file.read_text())
    except json.JSONDecodeError as err:
        raise RunDirError(f"{file}: not valid JSON ({err.msg})") from None
    if found.get("format") != fmt:
        raise RunDirError(f"{file}: not a unicorn {what}")
    old = found.get("config", {})
    for key in sorted(set(old) | set(config)):
        if old.get(key) != config.get(key):
            raise RunDirError(f"{file.parent} holds another {what} (its {key} is {old.get(key)!r}, this one's "
                              f"{config.get(key)!r}): choose another --out")


class RunDirError(ValueError):
    """An --out directory that holds something else, or another run's data."""


def atomic_write_bytes(path: Path, data: bytes) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    atomic_write(str(path), data)


def atomic_write_json(path: Path, obj) -> None:
    atomic_write_bytes(path, (json.dumps(obj, indent=1, ensure_ascii=False, sort_keys=True) + "\n").encode())


def model_digest(model_path: str) -> str:
    """config.json's bytes and every file's name and size (hashing the weights of a 7B model would take minutes)."""
    root = Path(model_path)
    digest = hashlib.sha256()
    for path in sorted(p for p in root.rglob("*") if p.is_file()):
        digest.update(f"{path.relative_to(root)}:{path.stat().st_size}\n".encode())
        if path.name == "config.json":
            digest.update(path.read_bytes())
    return digest.hexdigest()


class RunDir:
    def __init__(self, root: str | os.PathLike):
        self.root = Path(root)

    @property
    def epochs_dir(self) -> Path:
        return self.root / "epochs"

    def epoch_path(self, epoch: int) -> Path:
        return self.epochs_dir / f"epoch-{epoch:05d}.json"

    def image_rel(self, epoch: int, prompt_id: int, rollout: int) -> str:
        return f"images/{epoch:05d}/p{prompt_id:06d}-r{rollout}.png"

    def parts_dir(self) -> Path:
        return self.epochs_dir / "parts"

    def part_path(self, epoch: int, rank: int, world: int) -> Path:
        return self.parts_dir() / f"epoch-{epoch:05d}-r{rank}of{world}.json"

    def write_part(self, epoch: int, rank: int, world: int, data: dict) -> None:
        atomic_write_json(self.part_path(epoch, rank, world), {**data, "rank": rank, "world": world})

    def read_part(self, epoch: int, rank: int, world: int) -> dict:
        return json.loads(self.part_path(epoch, rank, world).read_text())

    def written_parts(self, rank: int, world: int) -> set[int]:
        if not self.parts_dir().is_dir():
            return set()
        return {int(p.name.split("-")[1]) for p in self.parts_dir().glob(f"epoch-*-r{rank}of{world}.json")}

    def parts_complete(self, epoch: int, world: int) -> bool:
        return all(self.part_path(epoch, r, world).exists() for r in range(world))

    def merge_parts(self, epoch: int, world: int) -> None:
        """Writes ``epoch-NNNNN.json`` from the workers' parts, the bytes one worker would have written (each slot
        from the worker that drew it), then removes the parts."""
        if not self.epoch_path(epoch).exists():
            parts = [self.read_part(epoch, r, world) for r in range(world)]
            slots = [parts[s["slot"] % world]["slots"][i] for i, s in enumerate(parts[0]["slots"])]
            best = sorted((b for p in parts for b in p["best"]), key=lambda b: b[2])
            first = parts[0]
            self.write_epoch(epoch, {"epoch": first["epoch"], "slots": slots, "after": first["after"],
                                     "demonstrations": first["demonstrations"], "best": best})
        for r in range(world):
            self.part_path(epoch, r, world).unlink(missing_ok=True)

    def open(self, config: dict, clean: bool = True) -> bool:
        """Creates the run or checks that ``root`` holds this same run; returns True when resuming. Leftover
        temp files of a killed run are removed (``clean``: by the one worker that opens the run first)."""
        run_file = self.root / "run.json"
        if run_file.exists():
            check_same_run(run_file, RUN_FORMAT, "self-play run", config)
            if clean:
                for tmp in self.root.rglob(".tmp-*"):
                    tmp.unlink()
            return True
        if self.root.exists() and any(self.root.iterdir()):
            raise RunDirError(f"{self.root} is not empty and holds no self-play run.json: choose another --out")
        atomic_write_json(run_file, {"format": RUN_FORMAT, "version": RUN_VERSION, "config": config})
        return False

    def remove_unstarted(self) -> None:
        """Undoes ``open`` (run.json, the recipe copy, then the directory if that leaves it empty) for a new run that
        stopped before writing anything else, so that the same --out can be used with other settings."""
        if self.epochs_dir.exists() or (self.root / "images").exists():
            return
        (self.root / "run.json").unlink(missing_ok=True)
        shutil.rmtree(self.root / "recipe", ignore_errors=True)
        if self.root.is_dir() and not any(self.root.iterdir()):
            self.root.rmdir()

    def completed_epochs(self) -> set[int]:
        if not self.epochs_dir.is_dir():
            return set()
        return {int(p.stem.split("-")[1]) for p in self.epochs_dir.glob("epoch-*.json")}

    def write_epoch(self, epoch: int, data: dict) -> None:
        atomic_write_json(self.epoch_path(epoch), data)

    def read_epoch(self, epoch: int) -> dict:
        return json.loads(self.epoch_path(epoch).read_text())

    def write_image(self, rel: str, image) -> str:
        """Writes the PNG and returns its sha256 (the rollouts table records it)."""
        import io

        buf = io.BytesIO()
        image.save(buf, format="PNG")
        atomic_write_bytes(self.root / rel, buf.getvalue())
        return hashlib.sha256(buf.getvalue()).hexdigest()
