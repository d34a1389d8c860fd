"""The toy shapes world: scene specs, a deterministic renderer, prompts, UniCycle questions and a
pixel-analysis oracle that scores images against their specs. See README.md in this folder.

This package's namespace is what the self-play loop may use: categories, scene specs, rubrics, role templates,
prompts and questions. Measurement lives in modules imported by path only, never from here (a test checks it):
``unicorn.toyworld.oracle`` (judge), ``.sampler`` (sample_scene), ``.splits``, ``.render``, ``.dataset``,
``.corrupt``.
"""
from .prompts import make_prompt
from .questions import Question, grade_answer, make_questions
from .roles import propose_instruction, question_text
from .rubrics import RUBRICS, rubric_text
from .scene import CATEGORIES, SCENE_VERSION, UNSUPPORTED_CATEGORIES, Scene

__all__ = [
    "CATEGORIES", "RUBRICS", "SCENE_VERSION", "UNSUPPORTED_CATEGORIES", "Question", "Scene", "grade_answer",
    "make_prompt", "make_questions", "propose_instruction", "question_text", "rubric_text",
]
