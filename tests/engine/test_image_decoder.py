"""The background image decoder: same pixels as inline, the caller's kernels choice in the worker, errors and
a dead worker come back as errors (never a hang), and no thread keeps the interpreter alive."""
import subprocess
import sys
import threading

import pytest
import torch

from unicorn.engine.image_decoder import ImageDecoder
from unicorn.kernels.dispatch import current_kernel_choice, kernel_choice


def fake_decode(codes):
    return codes[:, None, None, :].float().expand(-1, 3, 2, -1) / 7.0


def by_key(results):
    return {r.key: r for r in results}


@pytest.mark.parametrize("overlap", [False, True])
def test_a_batch_across_requests_comes_back_split_per_request(overlap):
    decoder = ImageDecoder(fake_decode, overlap=overlap)
    codes = {"a": torch.arange(8).view(2, 4), "b": torch.arange(4, 16).view(3, 4)}
    decoder.submit(list(codes.items()))
    assert decoder.num_pending == 2
    results = by_key(decoder.wait())
    assert decoder.num_pending == 0 and decoder.wait() == []
    for key, c in codes.items():
        assert results[key].error is None and torch.equal(results[key].pixels, fake_decode(c))
    decoder.close()


def test_overlap_returns_at_once_and_the_worker_decodes_under_the_callers_kernels_choice():
    release = threading.Event()
    seen = []

    def slow_decode(codes):
        seen.append((threading.current_thread() is threading.main_thread(), current_kernel_choice()))
        release.wait(30)
        return fake_decode(codes)

    decoder = ImageDecoder(slow_decode, overlap=True)
    with kernel_choice("torch"):
        decoder.submit([(1, torch.zeros(1, 4, dtype=torch.long))])
    assert decoder.poll() == []  # submit did not wait for the decode
    release.set()
    [result] = decoder.wait()
    assert result.key == 1 and result.error is None
    assert seen == [(False, "torch")]
    decoder.close()
    assert not decoder._thread.is_alive()
    with pytest.raises(RuntimeError, match="closed"):
        decoder.submit([(2, torch.zeros(1, 4, dtype=torch.long))])


@pytest.mark.parametrize("overlap", [False, True])
def test_a_failing_decode_is_each_requests_error(overlap):
    def broken(codes):
        raise ValueError("codebook index out of range\nsecond line")

    decoder = ImageDecoder(broken, overlap=overlap)
    decoder.submit([("x", torch.zeros(1, 4, dtype=torch.long)), ("y", torch.zeros(2, 4, dtype=torch.long))])
    results = by_key(decoder.wait())
    assert results["x"].error == results["y"].error == \
        "image decoding failed: ValueError: codebook index out of range"
    assert results["x"].pixels is None
    decoder.close()


def test_a_dead_worker_gives_errors_not_a_hang():
    def fatal(codes):
        raise SystemExit("worker killed")  # escapes the worker's except clause and ends the thread

    decoder = ImageDecoder(fatal, overlap=True)
    old_hook, threading.excepthook = threading.excepthook, lambda args: None
    try:
        decoder.submit([("z", torch.zeros(1, 4, dtype=torch.long))])
        [result] = decoder.wait()
    finally:
        threading.excepthook = old_hook
    assert result.key == "z" and "not running" in result.error


def test_a_busy_worker_ends_cleanly_at_exit():
    # No close(): the exit hook lets the batch finish and stops the thread (no hang, no abort at teardown).
    script = (
        "import time, torch\n"
        "from unicorn.engine.image_decoder import ImageDecoder\n"
        "d = ImageDecoder(lambda c: time.sleep(2) or c.float(), overlap=True)\n"
        "d.submit([(0, torch.zeros(1, 4, dtype=torch.long))])\n"
        "print('exiting')\n"
    )
    done = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=120)
    assert done.returncode == 0 and "exiting" in done.stdout, done.stderr
