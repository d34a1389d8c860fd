"""Runs every ``interp/`` module in a pytest subprocess under TRITON_INTERPRET=1 (see conftest.py)."""
import os
import pathlib
import subprocess
import sys

import pytest

pytest.importorskip("triton")
pytest.importorskip("numpy")  # the interpreter needs numpy

HERE = pathlib.Path(__file__).parent
REPO = HERE.parent.parent
MODULES = sorted(p.name for p in (HERE / "interp").glob("test_*.py"))


@pytest.mark.parametrize("module", MODULES)
def test_under_interpreter(module):
    env = dict(os.environ, TRITON_INTERPRET="1", TRITON_DEFAULT_FP_FUSION="1")
    env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(REPO), env.get("PYTHONPATH")]))
    proc = subprocess.run(
        [sys.executable, "-m", "pytest", "-q", "-x", "-p", "no:cacheprovider", str(HERE / "interp" / module)],
        cwd=REPO, env=env, capture_output=True, text=True, timeout=600,
    )
    assert proc.returncode == 0, proc.stdout[-6000:] + proc.stderr[-3000:]
