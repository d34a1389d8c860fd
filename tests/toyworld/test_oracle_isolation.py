"""The self-play loop never sees the oracle: importing any module of the loop (CPR, trainer, engine, role templates,
the toy world's categories and rubrics, and every module under unicorn/selfplay once it exists) must not load the
oracle, the scene sampler, the held-out splits or the renderer. Each group is imported in a fresh interpreter, so
nothing an earlier test imported can hide a leak."""
import json
import os
import pkgutil
import subprocess
import sys
from importlib.util import find_spec
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
# Measurement only: the oracle and the world's generator (which knows the held-out combinations).
FORBIDDEN = ("unicorn.toyworld.oracle", "unicorn.toyworld.sampler", "unicorn.toyworld.render", "unicorn.toyworld.splits")
LOOP_PACKAGES = ("unicorn.cpr", "unicorn.training", "unicorn.engine", "unicorn.selfplay")  # every module under them
LOOP_MODULES = (
    "unicorn.training.formats",  # role prompt templates of the trainer (and so of inference)
    "unicorn.toyworld",  # categories, rubrics (the package's lean __init__)
    "unicorn.toyworld.scene",
    "unicorn.toyworld.rubrics",  # rubric text, score bands, the weights
    "unicorn.toyworld.roles",  # the toy world's role prompt templates
    "unicorn.toyworld.prompts",
    "unicorn.toyworld.questions",
    "unicorn.toyworld.model",  # default_model_path()
)


def _walk(package: str) -> list[str]:
    if find_spec(package) is None:  # unicorn.selfplay: not written yet
        return []
    path = ROOT / package.replace(".", "/")
    return [package] + sorted(m.name for m in pkgutil.walk_packages([str(path)], prefix=package + "."))


GROUPS = {package: _walk(package) for package in LOOP_PACKAGES}
GROUPS["unicorn.toyworld (lean)"] = list(LOOP_MODULES)

# Imports each module in turn and reports which forbidden modules appeared with it (the first importer is blamed).
PROBE = """
import importlib, json, sys
forbidden, modules, leaks = {forbidden!r}, {modules!r}, {{}}
for name in modules:
    before = {{m for m in forbidden if m in sys.modules}}
    importlib.import_module(name)
    new = sorted(m for m in forbidden if m in sys.modules and m not in before)
    if new:
        leaks[name] = new
print(json.dumps(leaks))
"""


def test_the_walk_finds_the_loop_modules():
    assert "unicorn.cpr.schema" in GROUPS["unicorn.cpr"]
    assert {"unicorn.training.data", "unicorn.training.trainer"} <= set(GROUPS["unicorn.training"])
    assert {"unicorn.engine.llm_engine", "unicorn.engine.scheduler"} <= set(GROUPS["unicorn.engine"])
    if find_spec("unicorn.selfplay") is not None:
        assert len(GROUPS["unicorn.selfplay"]) >= 1


@pytest.mark.parametrize("group", [g for g, modules in GROUPS.items() if modules])
def test_loop_modules_do_not_import_the_oracle(group):
    code = PROBE.format(forbidden=FORBIDDEN, modules=GROUPS[group])
    out = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True, timeout=300,
                         env={**os.environ, "PYTHONPATH": os.pathsep.join([str(ROOT), os.environ.get("PYTHONPATH", "")])})
    assert out.returncode == 0, out.stderr[-2000:]
    leaks = json.loads(out.stdout.strip().splitlines()[-1])
    assert not leaks, f"loop modules import measurement-only modules: {leaks}"


def test_the_judge_reads_the_rubric_the_oracle_scores_with():
    from unicorn.toyworld import oracle
    from unicorn.toyworld.rubrics import CRITERIA, RUBRICS, rubric_text

    assert oracle.RUBRICS is RUBRICS
    for category, rubric in RUBRICS.items():
        text = rubric_text(category)
        assert all(f"- {name} ({points}): {CRITERIA[name]}." in text for name, points in rubric.items()), text
        assert "Bands: 10:" in text
