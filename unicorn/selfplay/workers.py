"""Self-play on several workers, each with its own engine, drawing and judging the prompt ids ``== rank (mod world)``
(unicorn/selfplay/driver.py): processes under ``torchrun`` (CPU: the gloo backend), or Ray actors when Ray is
installed. torch.distributed / Ray here only start the workers, wait for all of them and gather their counters;
epoch parts travel through the run directory (which every worker must see: one machine, or a shared file system)."""
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


def ray_available() -> bool:
    import importlib.util

    return importlib.util.find_spec("ray") is not None


class _RayWorker:
    """One Ray actor: one engine, one rank (wrapped by ``ray.remote`` at run time, so Ray stays optional)."""

    def work(self, job: dict, rank: int, world: int) -> dict:
        from unicorn.selfplay.run import work

        return work(**job, rank=rank, world=world, progress=False, log=lambda *_: None)


def run_ray_workers(job: dict, world: int) -> list:
    """Runs ``world`` actors of one CPU each on the Ray cluster (a local one is started if none is connected) and
    returns their results in rank order."""
    if not ray_available():
        raise RuntimeError("Ray is not installed (pip install ray), or run the workers under torchrun")
    import ray

    started = not ray.is_initialized()
    if started:
        ray.init(num_cpus=max(world, os.cpu_count() or 1), include_dashboard=False, log_to_driver=False)
    try:
        gpus = 1 if str(job.get("device", "cpu")).startswith("cuda") else 0  # Ray then shows each actor its own GPU
        actor = ray.remote(num_cpus=1, num_gpus=gpus)(_RayWorker)
        actors = [actor.remote() for _ in range(world)]
        return ray.get([a.work.remote(job, rank, world) for rank, a in enumerate(actors)])
    finally:
        if started:
            ray.shutdown()
