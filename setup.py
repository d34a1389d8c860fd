"""Builds the optional CUDA extension (csrc/) only when a CUDA-enabled torch and nvcc are both present.

A plain CPU install never tries: torch's CUDA_HOME is None with a CPU wheel, so the extension list stays empty.
"""
import os
import shutil

from setuptools import setup


def cuda_extensions():
    if os.environ.get("UNICORN_NO_CUDA_EXT"):
        return [], {}
    try:
        import torch
        from torch.utils.cpp_extension import CUDA_HOME, BuildExtension, CUDAExtension
    except ImportError:
        return [], {}
    if not torch.version.cuda or CUDA_HOME is None or shutil.which("nvcc") is None:
        return [], {}
    sources = sorted(
        os.path.join("csrc", name) for name in os.listdir("csrc") if name.endswith((".cu", ".cpp"))
    )
    if not sources:
        return [], {}
    ext = CUDAExtension(
        name="unicorn._C",
        sources=sources,
        extra_compile_args={"cxx": ["-O3"], "nvcc": ["-O3", "--use_fast_math"]},
    )
    return [ext], {"build_ext": BuildExtension}


ext_modules, cmdclass = cuda_extensions()
setup(ext_modules=ext_modules, cmdclass=cmdclass)
