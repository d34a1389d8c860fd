"""What a device allows and what a timed region used of it, for the benches' GPU paths (CPU fallbacks alike).

``datasheet(name)``: the vendor's dense bf16 TFLOP/s and HBM TB/s for the cards this project is lent (None
for others); ``measure_device``: the matmul TFLOP/s and read TB/s this device reaches in the run;
``Monitor``: peak memory (torch's allocator, and the driver's view through nvidia-ml-py when importable) and
mean GPU utilisation over a timed region, with the syncs that make a timer mean what it says.
"""
from __future__ import annotations

import resource
import threading
import time

import torch

# Vendor datasheets (SXM unless named): dense bf16 TFLOP/s (no sparsity), HBM TB/s. Matched on
# torch.cuda.get_device_name(); the first key found in the name wins, so the longer names come first.
DATASHEET = {
    "H100 PCIe": (756.0, 2.0),
    "H100 NVL": (835.0, 3.9),
    "H100": (989.0, 3.35),
    "H200": (989.0, 4.8),
}


def datasheet(name: str) -> tuple[float, float] | None:
    """(bf16 dense TFLOP/s, HBM TB/s) of a card named like ``name``, or None when the table lacks it."""
    for key, peaks in DATASHEET.items():
        if key in name:
            return peaks
    return None


def sync(device: str | torch.device) -> None:
    if torch.device(device).type == "cuda":
        torch.cuda.synchronize()


def best_of(fn, repeats: int, device: str | torch.device = "cpu") -> float:
    """Seconds of the fastest of ``repeats`` calls of ``fn`` after one warm-up call, each synced on ``device``."""
    fn()
    sync(device)
    best = float("inf")
    for _ in range(repeats):
        start = time.perf_counter()
        fn()
        sync(device)
        best = min(best, time.perf_counter() - start)
    return best


def measure_device(device: str | torch.device, dtype: torch.dtype, gemm: int = 8192, read_bytes: int = 4 << 30,
                   repeats: int = 10) -> dict:
    """Matmul TFLOP/s (a square ``gemm``-sided GEMM in ``dtype``) and read TB/s (a sum over ``read_bytes``), the
    best of ``repeats``; a CPU run passes small sizes."""
    a = torch.randn(gemm, gemm, device=device, dtype=dtype)
    b = torch.randn(gemm, gemm, device=device, dtype=dtype)
    tflops = 2 * gemm**3 / best_of(lambda: torch.mm(a, b), repeats, device) / 1e12
    del a, b
    buf = torch.ones(read_bytes // 4, device=device, dtype=torch.float32)
    read_tbs = read_bytes / best_of(lambda: buf.sum(), repeats, device) / 1e12
    del buf
    return {"matmul_tflops": tflops, "read_tbs": read_tbs, "gemm": gemm, "read_gib": read_bytes / 2**30}


def device_peaks(device: str, dtype: torch.dtype) -> dict:
    """Prints and returns the datasheet's (CUDA cards in DATASHEET) and the measured matmul TFLOP/s and read TB/s
    of ``device`` (small sizes on a CPU, where the figures only exercise the path)."""
    cuda = torch.device(device).type == "cuda"
    sizes = dict(gemm=8192, read_bytes=4 << 30) if cuda else dict(gemm=256, read_bytes=32 << 20, repeats=3)
    measured = measure_device(device, dtype, **sizes)
    sheet = datasheet(torch.cuda.get_device_name(torch.device(device))) if cuda else None
    if cuda:
        torch.cuda.empty_cache()
    print(f"measured: matmul {measured['matmul_tflops']:.3g} TFLOP/s ({measured['gemm']}^3, {str(dtype)[6:]}), "
          f"read {measured['read_tbs']:.3g} TB/s; datasheet: "
          + (f"{sheet[0]:.0f} TFLOP/s bf16 dense, {sheet[1]:.2f} TB/s" if sheet else "none for this device"))
    return {"measured_tflops": measured["matmul_tflops"], "measured_tbs": measured["read_tbs"],
            "datasheet_tflops": sheet[0] if sheet else None, "datasheet_tbs": sheet[1] if sheet else None}


class Monitor:
    """``with Monitor(device) as m: ...`` syncs before and after, times the region (``m.seconds``) and records
    the peak memory torch allocated in it (``m.peak_gib``), and with nvidia-ml-py the driver's peak used memory
    (``m.nvml_peak_gib``, every process on the card) and mean utilisation (``m.util_pct``) sampled every
    ``interval`` s. On a CPU ``m.peak_gib`` is the process's peak RSS so far (it cannot be reset)."""

    def __init__(self, device: str | torch.device, interval: float = 0.05):
        self.device = torch.device(device)
        self.interval = interval
        self.seconds = self.peak_gib = self.nvml_peak_gib = self.util_pct = None
        self._samples: list[tuple[int, int]] = []
        self._stop = threading.Event()
        self._thread = None

    def __enter__(self) -> "Monitor":
        if self.device.type == "cuda":
            torch.cuda.synchronize()
            torch.cuda.reset_peak_memory_stats()
            handle = _nvml_handle(self.device)
            if handle is not None:
                self._thread = threading.Thread(target=self._sample, args=(handle,), daemon=True)
                self._thread.start()
        self.start = time.perf_counter()
        return self

    def _sample(self, handle) -> None:
        import pynvml

        while not self._stop.is_set():
            util = pynvml.nvmlDeviceGetUtilizationRates(handle).gpu
            used = pynvml.nvmlDeviceGetMemoryInfo(handle).used
            self._samples.append((util, used))
            self._stop.wait(self.interval)

    def __exit__(self, *exc) -> None:
        sync(self.device)
        self.seconds = time.perf_counter() - self.start
        if self.device.type == "cuda":
            self.peak_gib = torch.cuda.max_memory_allocated() / 2**30
            if self._thread is not None:
                self._stop.set()
                self._thread.join()
                if self._samples:
                    self.util_pct = sum(u for u, _ in self._samples) / len(self._samples)
                    self.nvml_peak_gib = max(m for _, m in self._samples) / 2**30
        else:
            self.peak_gib = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 2**20  # KiB on Linux

    def rows(self, common: dict, provider: str) -> list[dict]:
        """The region's figures as result rows (those measured: nvml ones only with nvidia-ml-py)."""
        metric = "peak_memory_gib" if self.device.type == "cuda" else "peak_rss_gib"
        rows = [{**common, "provider": provider, "metric": metric, "value": self.peak_gib, "unit": "GiB"}]
        if self.nvml_peak_gib is not None:
            rows += [{**common, "provider": provider, "metric": "nvml_peak_used_gib", "value": self.nvml_peak_gib,
                      "unit": "GiB"},
                     {**common, "provider": provider, "metric": "gpu_util_pct", "value": self.util_pct, "unit": "%"}]
        return rows

    def describe(self) -> str:
        text = f"peak {'allocated' if self.device.type == 'cuda' else 'RSS'} {self.peak_gib:.1f} GiB"
        if self.nvml_peak_gib is not None:
            text += f", driver peak {self.nvml_peak_gib:.1f} GiB, utilisation {self.util_pct:.0f} %"
        return text


def _nvml_handle(device: torch.device):
    try:
        import pynvml
    except ImportError:
        return None
    try:
        pynvml.nvmlInit()
        index = device.index if device.index is not None else torch.cuda.current_device()
        return pynvml.nvmlDeviceGetHandleByIndex(index)
    except pynvml.NVMLError:
        return None
