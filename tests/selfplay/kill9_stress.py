"""SIGKILL stress for `unicorn selfplay` (run by hand; too slow for the suite):

    python tests/selfplay/kill9_stress.py --kills 10 --num-prompts 64 --epoch-size 4 --kill-min 0 --kill-max 4

Runs the command once uninterrupted (the reference), then again into a fresh directory, killing it with SIGKILL
at ``--kills`` random moments (each restart is killed uniform(--kill-min, --kill-max) seconds after it drew its
first new image, so every kill lands in the loop, a little further on each time) (each restart resumes the last), lets the last restart finish, and compares both
directories file by file (timing.json aside). Prints one JSON line: kill times, epochs written at each kill, equal.
"""
import argparse
import json
import os
import random
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]


def files(root: Path) -> dict:
    return {str(p.relative_to(root)): p.read_bytes() for p in sorted(root.rglob("*"))
            if p.is_file() and p.name != "timing.json"}


def num_images(root: Path) -> int:
    return len(list((root / "images").rglob("*.png"))) if (root / "images").is_dir() else 0


def main() -> int:
    ap = argparse.ArgumentParser()
    ap.add_argument("--kills", type=int, default=10)
    ap.add_argument("--num-prompts", type=int, default=16)
    ap.add_argument("--epoch-size", type=int, default=4)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--kill-min", type=float, default=0.0)
    ap.add_argument("--kill-max", type=float, default=4.0)
    args = ap.parse_args()
    tmp = Path(tempfile.mkdtemp(prefix="kill9-"))
    env = {**os.environ, "PYTHONPATH": str(ROOT)}

    def cmd(out):
        return [sys.executable, "-m", "unicorn.cli", "selfplay", "--num-prompts", str(args.num_prompts),
                "--epoch-size", str(args.epoch_size), "--out", str(out), "--seed", str(args.seed), "--no-progress"]

    start = time.perf_counter()
    subprocess.run(cmd(tmp / "ref"), env=env, check=True, capture_output=True)
    duration = time.perf_counter() - start
    rng = random.Random(args.seed)
    out, kills = tmp / "killed", []
    for _ in range(args.kills):
        before = num_images(out)
        proc = subprocess.Popen(cmd(out), env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        while num_images(out) <= before and proc.poll() is None:
            time.sleep(0.05)
        at = rng.uniform(args.kill_min, args.kill_max)
        try:
            proc.wait(timeout=at)
            kills.append({"at_s": round(at, 2), "finished_first": True})
            break
        except subprocess.TimeoutExpired:
            proc.send_signal(signal.SIGKILL)
            proc.wait()
        epochs = len(list((out / "epochs").glob("epoch-*.json"))) if (out / "epochs").is_dir() else 0
        kills.append({"at_s": round(at, 2), "epochs_written": epochs, "images": num_images(out),
                      "manifest": (out / "manifest.json").exists()})
    subprocess.run(cmd(out), env=env, check=True, capture_output=True)
    equal = files(out) == files(tmp / "ref")
    print(json.dumps({"reference_s": round(duration, 1), "kills": kills, "equal": equal, "dir": str(tmp)}))
    return 0 if equal else 1


if __name__ == "__main__":
    sys.exit(main())
