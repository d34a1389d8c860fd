"""unicorn.engine.host_malloc: with its glibc settings, tensors freed and allocated again reuse mapped pages
instead of faulting fresh ones in (checked in a subprocess: the settings are process-wide and stay)."""
import subprocess
import sys

import pytest

SCRIPT = r"""
import resource, torch
from unicorn.engine.host_malloc import keep_freed_host_memory

def faults_of(work):
    work()  # settle: the first round maps what later rounds may reuse
    start = resource.getrusage(resource.RUSAGE_SELF).ru_minflt
    for _ in range(5):
        work()
    return resource.getrusage(resource.RUSAGE_SELF).ru_minflt - start

def decoder_like():  # several 18 MiB activations alive at once, then all freed, as a VQ decoder's layers leave them
    live = [torch.ones(18 << 18) for _ in range(4)]
    del live

before = faults_of(decoder_like)
took = keep_freed_host_memory()
print(took, before, faults_of(decoder_like))
"""


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="glibc's mallopt: Linux only")
def test_freed_tensors_reuse_their_pages_once_the_settings_are_applied():
    out = subprocess.run([sys.executable, "-c", SCRIPT], capture_output=True, text=True, check=True).stdout.split()
    took, before, after = out[0] == "True", int(out[1]), int(out[2])
    if not took:
        pytest.skip("this C library has no glibc mallopt")
    assert before > 20_000  # glibc's defaults: ~18,000 fresh pages a round, handed back when freed
    assert after < before // 50, (before, after)
