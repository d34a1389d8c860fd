"""VQ decoding of finished image requests, off the engine's critical path.

The engine hands over, once per step, the codes of every image request that finished in that step (one batch
across requests). With ``overlap=True`` a worker thread decodes the batch while the engine's loop goes on
generating tokens (torch ops release the GIL; on CUDA the worker runs on its own stream); with
``overlap=False`` the batch is decoded at once, inside the loop. The batches are the same either way (what
finished in one step), so the pixels are identical with the overlap on or off.

The worker runs each batch in a copy of the submitting thread's ``contextvars`` context, so the engine's
kernels choice (:func:`unicorn.kernels.dispatch.kernel_choice`) holds there too. A failing batch gives each of
its requests an error, never a hang; the thread is a daemon and :meth:`ImageDecoder.close` (also run at exit or
when the decoder is collected, see the Engine) stops it.
"""
from __future__ import annotations

import contextvars
import queue
import threading
import weakref
from collections.abc import Callable, Hashable
from dataclasses import dataclass
from typing import Any

import torch


@dataclass
class DecodeResult:
    """One request's decoded images: ``pixels`` [n, 3, H, W] (the decoder's range), or ``error``."""

    key: Hashable
    pixels: torch.Tensor | None = None
    error: str | None = None


_STOP = object()


def _stop_worker(jobs: queue.Queue, thread: threading.Thread, timeout: float = 60.0) -> None:
    if thread.is_alive():
        jobs.put(_STOP)
        thread.join(timeout)


class ImageDecoder:
    """Decodes batches of image codes, on a worker thread (``overlap=True``) or inline.

    Args:
        decode: codes [N, num_generated_image_tokens] -> pixels [N, 3, H, W] (the model runner's ``decode_images``).
        overlap: decode on a worker thread while the caller goes on; False decodes inside :meth:`submit`.
        num_threads: torch intra-op threads of the worker (per thread in torch's OpenMP build); None keeps
            torch's default. Ignored inline.
        device: the decoder's device; on CUDA the worker decodes on its own stream.
    """

    def __init__(self, decode: Callable[[torch.Tensor], torch.Tensor], *, overlap: bool = True,
                 num_threads: int | None = None, device: torch.device | str = "cpu") -> None:
        if num_threads is not None and (not isinstance(num_threads, int) or num_threads < 1):
            raise ValueError(f"decode_threads must be an integer >= 1 or None, got {num_threads!r}")
        self._decode = decode
        self.overlap = overlap
        self._num_threads = num_threads
        self._device = torch.device(device)
        self._jobs: queue.Queue = queue.Queue()
        self._done: list[DecodeResult] = []
        self._lock = threading.Condition()
        self._pending = 0  # requests submitted and not yet handed back by poll() / wait()
        self._outstanding: dict[Hashable, None] = {}  # keys the worker holds (queued or decoding)
        self._thread: threading.Thread | None = None
        self._closed = False

    # ---- caller side ------------------------------------------------------------------------------
    @property
    def num_pending(self) -> int:
        """Requests submitted whose results poll() / wait() have not returned yet."""
        return self._pending

    def submit(self, jobs: list[tuple[Hashable, torch.Tensor]]) -> None:
        """Queues one batch: ``(key, codes [n_i, num_generated_image_tokens])`` per request, decoded together."""
        if not jobs:
            return
        if self._closed:
            raise RuntimeError("the image decoder is closed")
        self._pending += len(jobs)
        context = contextvars.copy_context()
        if not self.overlap:
            self._finish(jobs, context)
            return
        with self._lock:
            self._outstanding.update((key, None) for key, _ in jobs)
        self._start()
        self._jobs.put((jobs, context))

    def poll(self) -> list[DecodeResult]:
        """The results ready now (never blocks)."""
        with self._lock:
            done, self._done = self._done, []
        return self._hand_back(done)

    def wait(self) -> list[DecodeResult]:
        """Blocks until every submitted request is decoded; returns the results not yet handed back. If the
        worker thread is gone (closed, or killed), the requests it still held come back with an error."""
        with self._lock:
            while self._outstanding:
                if self._thread is None or not self._thread.is_alive():
                    reason = "image decoding stopped: the decoder thread is not running"
                    self._done.extend(DecodeResult(key, error=reason) for key in self._outstanding)
                    self._outstanding.clear()
                    break
                self._lock.wait(timeout=0.05)
            done, self._done = self._done, []
        return self._hand_back(done)

    def close(self, timeout: float = 10.0) -> None:
        """Stops the worker (after the batch it is decoding); later submits raise. Idempotent."""
        self._closed = True
        thread = self._thread
        if thread is not None and thread.is_alive():
            self._jobs.put(_STOP)
            thread.join(timeout)

    # ---- internals --------------------------------------------------------------------------------
    def _hand_back(self, results: list[DecodeResult]) -> list[DecodeResult]:
        self._pending -= len(results)
        if self._device.type == "cuda":
            stream = torch.cuda.current_stream(self._device)
            for result in results:  # made on the worker's stream, used on the caller's from now on
                if result.pixels is not None:
                    result.pixels.record_stream(stream)
        return results

    def _start(self) -> None:
        if self._thread is None or not self._thread.is_alive():
            self._thread = threading.Thread(target=self._work, name="unicorn-image-decoder", daemon=True)
            self._thread.start()
            # At exit, let the batch in hand finish and stop the thread before the runtime tears down (a thread
            # still inside torch then can abort the process). weakref.finalize runs at exit and holds no self.
            weakref.finalize(self, _stop_worker, self._jobs, self._thread)

    def _work(self) -> None:
        if self._num_threads is not None:
            torch.set_num_threads(self._num_threads)  # this thread's OpenMP team only
        stream = torch.cuda.Stream(self._device) if self._device.type == "cuda" else None
        while True:
            item = self._jobs.get()
            if item is _STOP:
                return
            jobs, context = item
            if stream is None:
                self._finish(jobs, context)
            else:
                with torch.cuda.stream(stream):
                    self._finish(jobs, context, stream)

    def _finish(self, jobs: list[tuple[Hashable, torch.Tensor]], context: contextvars.Context,
                stream: Any = None) -> None:
        try:
            # one job may carry any payload its decode takes (a flow request's latents), several are concatenated
            codes = jobs[0][1] if len(jobs) == 1 else torch.cat([codes for _, codes in jobs])
            pixels = context.run(self._decode, codes)
            if stream is not None:
                stream.synchronize()
            results, start = [], 0
            for key, job_codes in jobs:
                results.append(DecodeResult(key, pixels=pixels[start : start + len(job_codes)]))
                start += len(job_codes)
        except Exception as err:  # noqa: BLE001 - every failure becomes the requests' error
            reason = f"image decoding failed: {type(err).__name__}: {err}".splitlines()[0]
            results = [DecodeResult(key, error=reason) for key, _ in jobs]
        with self._lock:
            self._done.extend(results)
            for key, _ in jobs:
                self._outstanding.pop(key, None)
            self._lock.notify_all()
