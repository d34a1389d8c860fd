"""The UniCycle instance schema [ours] (method.md section 6), one JSON object per line:

    {"id": "...", "category": "...", "prompt": "...",
     "questions": [{"id": "q0", "type": "mc" | "yesno" | "open" | "text", "question": "...",
                    "options": [...],            # mc: required, the answer is one of them; yesno: optional
                    "answer": "...",             # the reference answer (yesno: "yes" or "no", any case)
                    "keywords": [...],           # text: the reference keywords (default: [answer])
                    "grader": "exact"}],         # open: "exact" (default) or "toyworld" (the world's grader)
     "meta": {...}}                              # optional, kept as given (e.g. TIIF's file and line)

Loading reports the first problem in one line naming the file, the line number and the field.
The answers file (``unicorn unicycle score --answers``) holds ``{"id": ..., "answers": {question id: text}}``.
"""
from __future__ import annotations

import json
import os
from dataclasses import asdict, dataclass, field
from pathlib import Path

QUESTION_TYPES = ("mc", "yesno", "open", "text")
OPEN_GRADERS = ("exact", "toyworld")


class SchemaError(ValueError):
    """A malformed instance or answers file; the message is one line naming file, line and field."""


@dataclass(frozen=True)
class Question:
    id: str
    type: str
    question: str
    answer: str
    options: tuple[str, ...] = ()
    keywords: tuple[str, ...] = ()
    grader: str = "exact"

    def to_dict(self) -> dict:
        d = asdict(self)
        d["options"], d["keywords"] = list(self.options), list(self.keywords)
        return d


@dataclass(frozen=True)
class Instance:
    id: str
    category: str
    prompt: str
    questions: tuple[Question, ...]
    meta: dict = field(default_factory=dict, compare=False)

    def to_dict(self) -> dict:
        d = {"id": self.id, "category": self.category, "prompt": self.prompt,
             "questions": [q.to_dict() for q in self.questions]}
        if self.meta:
            d["meta"] = self.meta
        return d


def _string(where: str, obj: dict, key: str, required: bool = True, default: str = "") -> str:
    if key not in obj:
        if required:
            raise SchemaError(f"{where}: missing field {key!r}")
        return default
    value = obj[key]
    if not isinstance(value, str) or (required and not value.strip()):
        raise SchemaError(f"{where}: field {key!r} must be a non-empty string, got {value!r}")
    return value


def _strings(where: str, obj: dict, key: str) -> tuple[str, ...]:
    value = obj.get(key, [])
    if value is None:
        return ()
    if not isinstance(value, list) or not all(isinstance(v, str) and v.strip() for v in value):
        raise SchemaError(f"{where}: field {key!r} must be a list of non-empty strings, got {value!r}")
    return tuple(value)


def parse_question(where: str, obj) -> Question:
    """One question dict -> Question, or a SchemaError naming ``where`` and the field."""
    if not isinstance(obj, dict):
        raise SchemaError(f"{where}: a question must be an object, got {type(obj).__name__}")
    qid = _string(where, obj, "id")
    where = f"{where} (question {qid!r})"
    qtype = _string(where, obj, "type")
    if qtype not in QUESTION_TYPES:
        raise SchemaError(f"{where}: unknown question type {qtype!r} (expected one of {', '.join(QUESTION_TYPES)})")
    text, answer = _string(where, obj, "question"), _string(where, obj, "answer")
    options, keywords = _strings(where, obj, "options"), _strings(where, obj, "keywords")
    grader = _string(where, obj, "grader", required=False, default="exact")
    if qtype == "mc":
        if len(options) < 2:
            raise SchemaError(f"{where}: field 'options' needs at least two options for an mc question")
        if answer not in options:
            raise SchemaError(f"{where}: field 'answer' {answer!r} is not one of the options {list(options)}")
    if qtype == "yesno" and answer.strip().lower() not in ("yes", "no"):
        raise SchemaError(f"{where}: field 'answer' of a yesno question must be yes or no, got {answer!r}")
    if qtype == "text" and not keywords:
        keywords = (answer,)
    if grader not in OPEN_GRADERS:
        raise SchemaError(f"{where}: unknown grader {grader!r} (expected one of {', '.join(OPEN_GRADERS)})")
    return Question(qid, qtype, text, answer, options, keywords, grader)


def parse_instance(where: str, obj) -> Instance:
    if not isinstance(obj, dict):
        raise SchemaError(f"{where}: an instance must be a JSON object, got {type(obj).__name__}")
    iid = _string(where, obj, "id")
    category, prompt = _string(where, obj, "category"), _string(where, obj, "prompt")
    raw = obj.get("questions")
    if not isinstance(raw, list) or not raw:
        raise SchemaError(f"{where}: field 'questions' must be a non-empty list")
    questions = tuple(parse_question(where, q) for q in raw)
    ids = [q.id for q in questions]
    if len(set(ids)) != len(ids):
        raise SchemaError(f"{where}: question ids repeat: {ids}")
    meta = obj.get("meta", {})
    if not isinstance(meta, dict):
        raise SchemaError(f"{where}: field 'meta' must be an object")
    return Instance(iid, category, prompt, questions, meta)


def read_jsonl(path: str | os.PathLike):
    """(``file:line`` label, parsed object) per non-empty line; a malformed line raises with its file and line."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"no such file: {path}")
    with open(path, encoding="utf-8") as f:
        for number, line in enumerate(f, 1):
            if not line.strip():
                continue
            where = f"{path}:{number}"
            try:
                yield where, json.loads(line)
            except json.JSONDecodeError as err:
                raise SchemaError(f"{where}: malformed JSON ({err.msg} at column {err.colno})") from None


def load_instances(path: str | os.PathLike) -> list[Instance]:
    """Every instance of a JSONL file in our schema; ids must be unique."""
    instances, seen = [], {}
    for where, obj in read_jsonl(path):
        inst = parse_instance(where, obj)
        if inst.id in seen:
            raise SchemaError(f"{where}: instance id {inst.id!r} already used at line {seen[inst.id]}")
        seen[inst.id] = where.rsplit(":", 1)[1]
        instances.append(inst)
    if not instances:
        raise SchemaError(f"{path}: no instances")
    return instances


def load_answers(path: str | os.PathLike) -> dict[str, dict[str, str]]:
    """``{instance id: {question id: answer text}}`` from an answers JSONL (``id``, ``answers``)."""
    answers: dict[str, dict[str, str]] = {}
    for where, obj in read_jsonl(path):
        if not isinstance(obj, dict):
            raise SchemaError(f"{where}: an answers line must be a JSON object")
        iid = _string(where, obj, "id")
        given = obj.get("answers")
        if not isinstance(given, dict) or not all(isinstance(v, str) for v in given.values()):
            raise SchemaError(f"{where}: field 'answers' must map question ids to strings")
        answers[iid] = given
    return answers


def write_jsonl(path: str | os.PathLike, rows) -> None:
    """Writes all rows atomically (a temporary file renamed over the target)."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(path.name + ".tmp")
    with open(tmp, "w", encoding="utf-8") as f:
        for row in rows:
            f.write(json.dumps(row, ensure_ascii=False) + "\n")
    tmp.replace(path)


def write_instances(path: str | os.PathLike, instances) -> None:
    write_jsonl(path, (inst.to_dict() for inst in instances))
