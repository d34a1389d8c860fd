"""Shared tolerance table for the kernel tests: (dtype, atol, rtol)."""
import torch

TOLERANCES = [
    (torch.float32, 1e-5, 1e-5),
    (torch.float16, 2e-3, 2e-3),
    (torch.bfloat16, 1.6e-2, 1.6e-2),
]
# Kernels whose bf16 tiles go through tl.dot run in the interpreter only after an fp32 upcast (bf16 tl.dot is
# wrong there, triton-lang/triton#11584); the launchers do that upcast under TRITON_INTERPRET.
ATTENTION_TOLERANCES = [
    (torch.float32, 2e-5, 2e-5),
    (torch.float16, 2e-3, 2e-3),
    (torch.bfloat16, 1.6e-2, 1.6e-2),
]
