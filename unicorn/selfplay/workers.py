"""Self-play on several workers: one engine per process under ``torchrun`` (CPU: the gloo backend), each drawing and
judging the prompt ids ``== rank (mod world)`` (unicorn/selfplay/driver.py). torch.distributed here only starts the
workers, waits for all of them and gathers their counters; epoch parts travel through the run directory."""
from __future__ import annotations

import datetime
import os
import sys

GROUP_TIMEOUT = datetime.timedelta(hours=12)  # rank 0 builds the CPR data set while the others wait at a barrier


def env_world() -> tuple[int, int]:
    """(rank, world size) of this process as torchrun set them, (0, 1) outside torchrun."""
    return int(os.environ.get("RANK", 0)), int(os.environ.get("WORLD_SIZE", 1))


def init(world: int) -> None:
    import torch.distributed as dist

    if world > 1 and not dist.is_initialized():
        dist.init_process_group("gloo", timeout=GROUP_TIMEOUT)


def barrier(world: int) -> None:
    if world > 1:
        import torch.distributed as dist

        dist.barrier()


def gather(obj, world: int) -> list:
    """Every worker's ``obj`` (a picklable value), in rank order, on every worker."""
    if world == 1:
        return [obj]
    import torch.distributed as dist

    out = [None] * world
    dist.all_gather_object(out, obj)
    return out


def shutdown(world: int) -> None:
    if world > 1:
        import torch.distributed as dist

        if dist.is_initialized():
            dist.destroy_process_group()


def relaunch_under_torchrun(workers: int) -> None:
    """Replaces this process by ``torchrun --standalone --nproc_per_node W`` running the same command line."""
    argv = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node", str(workers),
            "-m", "unicorn.cli", *sys.argv[1:]]
    os.execv(sys.executable, argv)
