"""Where the optimizer step happens: ``single`` (one process), ``fsdp2`` (torch FSDP2) and ``deepspeed`` (ZeRO).

Each backend wraps the TrainingModel and owns forward / backward / step / checkpoint / full-state gathering; the
training loop (trainer.py) is the same for all three.
"""
from __future__ import annotations

import os
import socket
import tempfile

import torch
import torch.distributed as dist

from unicorn.training import checkpoint as ckpt
from unicorn.training.config import OptimConfig, TrainConfig, load_deepspeed_config
from unicorn.training.parallelize import ParallelConfig, parallelize


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def init_distributed(device: torch.device) -> tuple[int, int]:
    """Joins (or creates) the default process group from torchrun's env; a lone process gets a world of 1."""
    if not dist.is_initialized():
        world = int(os.environ.get("WORLD_SIZE", "1"))
        rank = int(os.environ.get("RANK", "0"))
        init_method = None
        if "MASTER_ADDR" not in os.environ:
            if world != 1:
                raise RuntimeError("WORLD_SIZE > 1 but MASTER_ADDR is not set: launch with torchrun")
            init_method = f"file://{tempfile.mkdtemp(prefix='unicorn-pg-')}/init"
        backend = "nccl" if device.type == "cuda" else "gloo"
        dist.init_process_group(backend, init_method=init_method, rank=rank, world_size=world)
    return dist.get_rank(), dist.get_world_size()


class Backend:
    name = ""

    def __init__(self, cfg: TrainConfig, device: torch.device, bf16: bool):
        self.cfg, self.device, self.bf16 = cfg, device, bf16
        self.rank, self.world_size = 0, 1
        self.module: torch.nn.Module | None = None
        self.optimizer = None

    # collectives (no-ops for one process)
    def all_reduce_sum(self, t: torch.Tensor) -> torch.Tensor:
        if self.world_size == 1:
            return t
        dev = self.device if self.device.type == "cuda" else torch.device("cpu")
        out = t.to(dev).clone()
        dist.all_reduce(out)
        return out.to(t.device)

    def barrier(self) -> None:
        if self.world_size > 1:
            dist.barrier()

    def set_lr(self, lr: float) -> None:
        for group in self.optimizer.param_groups:
            group["lr"] = lr

    def trainable(self) -> list[torch.nn.Parameter]:
        return [p for p in self.module.parameters() if p.requires_grad]

    def autocast(self):
        if self.device.type == "cuda" and self.bf16 and self.name == "single":
            return torch.autocast("cuda", dtype=torch.bfloat16)
        return torch.autocast(self.device.type, enabled=False)

    def forward(self, batch):
        return self.module(batch)

    def close(self) -> None:
        pass


class _TorchBackend(Backend):
    """single and fsdp2: torch AdamW, torch clipping, torch.distributed.checkpoint."""

    def _parallel_config(self) -> ParallelConfig:
        return ParallelConfig(self.cfg.activation_checkpointing, self.cfg.compile, self.cfg.freeze_vision,
                              "bf16" if self.bf16 and self.name == "fsdp2" else "fp32")

    def _build_optimizer(self, optim: OptimConfig) -> None:
        self.optimizer = optim.build(self.trainable())

    def backward(self, loss: torch.Tensor, last_micro: bool) -> None:
        loss.backward()

    def step(self, clip: float) -> float:
        params = self.trainable()
        norm = torch.nn.utils.clip_grad_norm_(params, clip if clip > 0 else float("inf"), foreach=True)
        if hasattr(norm, "full_tensor"):
            norm = norm.full_tensor()
        self.optimizer.step()
        self.optimizer.zero_grad(set_to_none=True)
        return float(norm)

    def save(self, path: str) -> None:
        ckpt.dcp_save(path, self.module, self.optimizer)

    def load(self, path: str) -> None:
        ckpt.dcp_load(path, self.module, self.optimizer)


class SingleBackend(_TorchBackend):
    name = "single"

    def setup(self, model) -> None:
        if int(os.environ.get("WORLD_SIZE", "1")) > 1:
            raise RuntimeError("--backend single runs in one process, but WORLD_SIZE > 1: use --backend fsdp2")
        self.module = parallelize(model.to(self.device), self._parallel_config())
        self._build_optimizer(self.cfg.optim)

    def full_state_dict(self) -> dict[str, torch.Tensor]:
        return {k: v.detach().cpu() for k, v in self.module.state_dict().items()}


class FSDP2Backend(_TorchBackend):
    name = "fsdp2"

    def setup(self, model) -> None:
        from torch.distributed.device_mesh import init_device_mesh

        self.rank, self.world_size = init_distributed(self.device)
        mesh = init_device_mesh(self.device.type, (self.world_size,))
        self.module = parallelize(model, self._parallel_config(), mesh=mesh)
        self._build_optimizer(self.cfg.optim)

    def backward(self, loss: torch.Tensor, last_micro: bool) -> None:
        self.module.set_requires_gradient_sync(last_micro)  # reduce-scatter once per step
        loss.backward()

    def full_state_dict(self) -> dict[str, torch.Tensor]:
        from torch.distributed.checkpoint.state_dict import StateDictOptions, get_model_state_dict

        return get_model_state_dict(self.module, options=StateDictOptions(full_state_dict=True, cpu_offload=True))


class DeepSpeedBackend(Backend):
    name = "deepspeed"

    def setup(self, model) -> None:
        os.environ.setdefault("DS_ACCELERATOR", "cuda" if self.device.type == "cuda" else "cpu")
        import deepspeed

        if not dist.is_initialized() and "MASTER_ADDR" not in os.environ:
            init_distributed(self.device)  # a lone process
        deepspeed.init_distributed(dist_backend="nccl" if self.device.type == "cuda" else "gloo")  # reuses a group
        self.rank, self.world_size = dist.get_rank(), dist.get_world_size()
        os.environ.setdefault("LOCAL_RANK", str(self.rank))  # DeepSpeed insists; mp.spawn does not set it
        self.ds_config = load_deepspeed_config(self.cfg, self.world_size, self.bf16)
        self.stage = (self.ds_config.get("zero_optimization") or {}).get("stage", 0)
        model = parallelize(model, ParallelConfig(self.cfg.activation_checkpointing, self.cfg.compile,
                                                  self.cfg.freeze_vision))
        if self.stage == 3:
            model.prepare_zero3(deepspeed)
        trainable = [p for p in model.parameters() if p.requires_grad]
        self.engine, self.optimizer, _, _ = deepspeed.initialize(
            model=model, optimizer=self.cfg.optim.build(trainable), config=self.ds_config,
            dist_init_required=False,
        )
        self.module = self.engine

    def forward(self, batch):
        return self.engine(batch)

    def backward(self, loss: torch.Tensor, last_micro: bool) -> None:
        # the loss is already scaled for accumulation (see loss.py); DeepSpeed averages over ranks
        self.engine.backward(loss, scale_wrt_gas=False)
        self.engine.step()  # a real step only at the accumulation boundary

    def step(self, clip: float) -> float:
        norm = self.engine.get_global_grad_norm()
        return float(norm) if norm is not None else float("nan")

    def save(self, path: str) -> None:
        self.engine.save_checkpoint(os.path.join(path, "ds"), tag="state", save_latest=False)

    def load(self, path: str) -> None:
        loaded, _ = self.engine.load_checkpoint(os.path.join(path, "ds"), tag="state", load_optimizer_states=True,
                                                load_lr_scheduler_states=False)
        if loaded is None:
            raise ckpt.ResumeError(f"DeepSpeed could not load {os.path.join(path, 'ds')}")

    def full_state_dict(self) -> dict[str, torch.Tensor]:
        import deepspeed

        module = self.engine.module
        if self.stage == 3:
            with deepspeed.zero.GatheredParameters(list(module.parameters()), modifier_rank=None):
                return {k: v.detach().cpu().clone() for k, v in module.state_dict().items()} if self.rank == 0 else {}
        return {k: v.detach().cpu().clone() for k, v in module.state_dict().items()}


def build_backend(cfg: TrainConfig, device: torch.device, bf16: bool) -> Backend:
    return {"single": SingleBackend, "fsdp2": FSDP2Backend, "deepspeed": DeepSpeedBackend}[cfg.backend](cfg, device, bf16)
