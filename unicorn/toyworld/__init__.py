"""The toy shapes world: scene specs, a deterministic renderer, prompts, UniCycle questions and a
pixel-analysis oracle that scores images against their specs. See README.md in this folder."""
from .dataset import Example, generate, load, make_example
from .oracle import RUBRICS, OracleReport, judge
from .prompts import make_prompt
from .questions import Question, grade_answer, make_questions
from .render import render, render_array
from .sampler import sample_scene
from .scene import CATEGORIES, SCENE_VERSION, UNSUPPORTED_CATEGORIES, Scene

__all__ = [
    "CATEGORIES", "SCENE_VERSION", "UNSUPPORTED_CATEGORIES", "RUBRICS", "Example", "OracleReport", "Question", "Scene",
    "generate", "grade_answer", "judge", "load", "make_example", "make_prompt", "make_questions", "render",
    "render_array", "sample_scene",
]
