"""Kernel tests.

TRITON_INTERPRET must be set before a kernel module is imported (``triton.jit`` picks the interpreter at decoration
time), and it must not leak into other test folders. So the numerics tests in ``interp/`` are collected only when
``TRITON_INTERPRET=1`` is already set; in a normal run ``test_interpreter.py`` runs each ``interp/`` module in its
own pytest subprocess with that variable set. Run one directly with
``TRITON_INTERPRET=1 python -m pytest tests/kernels/interp/test_interp_sampling.py``.
"""
import os

if os.environ.get("TRITON_INTERPRET", "0") in ("", "0"):
    collect_ignore_glob = ["interp/*"]
