"""fp32 linear layers on the CPU through oneDNN with each weight reordered once ("packed") into the layout its
GEMM kernel reads, instead of torch's default GEMM, which repacks the weight on every call.

Why: on janus-mid's decode step (128 rows) the engine's step ran 5-11 % faster in same-process A/B runs, mostly
from the image head (64 x 512 x 16384: ~1.6x); and the packed GEMM is batch-invariant: a row's output does not
depend on the other rows, their number or the thread count (torch's default GEMM differs in the last bits
between batch sizes). The results differ from ``F.linear`` (the reference) by float rounding only (~1e-6
relative: another order of the same sums).

Used under inference mode only, on float32 CPU tensors where torch has oneDNN, for weights of at least
``MIN_PACKED_ELEMENTS``, unless the engine's kernel choice is "torch"; callers keep ``F.linear`` otherwise. Below
that size oneDNN's ~30 us more per call than ``F.linear`` is not won back: the toy model's 128-wide layers made
its self-play loop ~30 % slower packed, at every batch size. The choice depends on the weight alone, never on the
batch, so the rows of a packed layer stay batch-invariant; the rows of a smaller layer may differ in the last bits
between batch sizes, as torch's GEMM does. The packed copy costs a second copy of the weight's bytes;
it is rebuilt when the weight changes (a new storage, or an in-place update that bumps its version: a write
through ``.data`` does not) and dropped by :func:`release_packed_weights` (an engine's ``sleep`` and
``update_weights``).
"""
from __future__ import annotations

import torch
import torch.nn.functional as F

from unicorn.kernels.dispatch import current_kernel_choice


def available() -> bool:
    """Whether this torch build has oneDNN's packed linear ops."""
    return (torch.backends.mkldnn.is_available() and hasattr(torch.ops.mkldnn, "_reorder_linear_weight")
            and hasattr(torch.ops.mkldnn, "_linear_pointwise"))


_AVAILABLE = available()
MIN_PACKED_ELEMENTS = 512 * 512  # janus-mid's o_proj and up; the toy model's largest layer is 640 x 128


def usable(x: torch.Tensor, weight: torch.Tensor) -> bool:
    """fp32 CPU tensors under inference mode (a trainer's evaluation under no_grad keeps F.linear and makes no
    packed copies), a weight of at least MIN_PACKED_ELEMENTS, kernels other than "torch" chosen, and oneDNN in this
    torch."""
    if not (_AVAILABLE and torch.is_inference_mode_enabled()):
        return False
    if x.dtype != torch.float32 or weight.dtype != torch.float32:
        return False
    if x.device.type != "cpu" or weight.device.type != "cpu" or x.dim() < 2 or x.shape[-1] == 0:
        return False
    if weight.numel() < MIN_PACKED_ELEMENTS:
        return False
    return current_kernel_choice() != "torch"


def linear(x: torch.Tensor, packed: torch.Tensor, bias: torch.Tensor | None) -> torch.Tensor:
    """``F.linear(x, weight, bias)`` from the packed weight (see :class:`PackedWeight`); x: [..., in_features]."""
    return torch.ops.mkldnn._linear_pointwise(x, packed, bias, "none", [], "")


def _version(tensor: torch.Tensor) -> int:
    return 0 if tensor.is_inference() else tensor._version  # inference tensors are never updated in place


class PackedWeight:
    """One weight's packed copy, rebuilt when the weight's storage, shape, strides or version (its own or its
    parts') change."""

    def __init__(self) -> None:
        self._key: tuple | None = None
        self._packed: torch.Tensor | None = None
        self.enabled = True  # False: F.linear (bench/janus_images.py --compare times the previous path)

    def __call__(self, x: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor | None,
                 parts: tuple[torch.Tensor, ...] = ()) -> torch.Tensor:
        """F.linear(x, weight, bias). ``parts``: the tensors whose in-place updates change ``weight`` (the layers'
        parameters re-pointed at slices of a concatenation keep version counters of their own)."""
        if not (self.enabled and usable(x, weight)):
            return F.linear(x, weight, bias)
        key = (weight.data_ptr(), tuple(weight.shape), weight.stride(), *map(_version, (weight, *parts)))
        if key != self._key:
            self._packed = None  # the old copy goes before the new one is made
            rows = max(1, x.numel() // x.shape[-1])  # a hint only: any batch size gives the same bits
            self._packed = torch.ops.mkldnn._reorder_linear_weight(weight, rows)  # under inference mode (usable)
            self._key = key
        return linear(x, self._packed, bias)

    def release(self) -> None:
        self._key = self._packed = None


def packed_weights(module: torch.nn.Module) -> list[PackedWeight]:
    """The packed weights held by ``module``'s submodules, directly or by an object they hold (fused linears)."""
    found = []
    for sub in module.modules():
        for value in vars(sub).values():
            for candidate in (value, getattr(value, "packed_weight", None)):
                if isinstance(candidate, PackedWeight):
                    found.append(candidate)
    return found


def release_packed_weights(module: torch.nn.Module) -> None:
    """Drops the packed copies of ``module``'s weights (each is rebuilt at its next call)."""
    for packed in packed_weights(module):
        packed.release()
