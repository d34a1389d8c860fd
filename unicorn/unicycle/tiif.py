"""TIIF-Bench's own files (github A113N-W3I/TIIF-Bench) as UniCycle instances, a builder of extra "no" and
multiple-choice items, and results in TIIF's per-image judge-output layout.

Layout read (DIR is a TIIF-Bench checkout or its ``data`` folder; SPLIT is ``test`` or ``testmini``):
    DIR/data/SPLIT_prompts/<cat>_prompts.jsonl             {"type", "short_description", "long_description"}
    DIR/data/SPLIT_eval_prompts/<cat>_eval_prompts.jsonl   {"type", "yn_question_list", "yn_answer_list"}
Line i of a prompts file goes with line i of its eval file. Each line gives one instance per variant (``short``:
short_description, ``long``: long_description), id ``tiif-SPLIT/<type>/<variant>/<line>``, category ``type``,
questions ``yn0``, ``yn1``, ... (yesno, gold lower-cased).

TIIF's gold is almost all "yes" (a yes-sayer scores ~97 %), so ``build_extra_items`` asks a writer model, per
instance, for as many "no" questions as it has more "yes" than "no" answers, and ``num_mc`` multiple-choice
questions; it keeps what parses and validates, and writes the instances plus a review file of every reply.
These items are our reconstruction, not TIIF's or the paper's.

Output layout written (what TIIF's eval/summary_results.py reads: ``--input_dir OUT/tiif_eval``):
    OUT/tiif_eval/<model>/<type>/<short|long>/<line>.json   {"attribute", "desc", "jsonl_file", "line_idx",
                                                            "questions", "gt_answers", "model_pred", "model_output"}
with ``model_pred`` the yes / no that the rule judge reads in the model's own answer ("none" when it reads neither)
to TIIF's own questions only.
"""
from __future__ import annotations

import json
import os
from pathlib import Path

from .judges import yes_no
from .schema import Instance, Question, SchemaError, read_jsonl, write_instances, write_jsonl

VARIANTS = {"short": "short_description", "long": "long_description"}

BUILD_TEMPLATE = (
    "Text-to-image prompt: {prompt}\n"
    "Write questions about an image that follows this prompt exactly.\n"
    "1. {num_no} different yes/no questions whose correct answer is no (about something the prompt rules out or "
    "contradicts).\n"
    "2. {num_mc} multiple-choice questions with 4 options each, exactly one of them correct given the prompt.\n"
    'Reply with JSON only: {{"no": ["..."], "mc": [{{"question": "...", "options": ["...", "...", "...", "..."], '
    '"answer": "..."}}]}}'
)


def _data_dir(root: Path, split: str) -> Path:
    for base in (root / "data", root):
        if (base / f"{split}_prompts").is_dir():
            return base
    raise FileNotFoundError(f"{root}: no {split}_prompts folder (expected DIR/data/{split}_prompts/<cat>_prompts.jsonl)")


def _text(where: str, obj: dict, key: str) -> str:
    value = obj.get(key)
    if not isinstance(value, str) or not value.strip():
        raise SchemaError(f"{where}: field {key!r} must be a non-empty string")
    return value


def read_tiif(root: str | os.PathLike, split: str = "testmini", variants=("short", "long")) -> list[Instance]:
    """Every TIIF prompt of ``split`` as one instance per variant, categories in file-name order."""
    if split not in ("test", "testmini"):
        raise ValueError(f"TIIF split must be test or testmini, got {split!r}")
    unknown = [v for v in variants if v not in VARIANTS]
    if unknown or not variants:
        raise ValueError(f"TIIF variants must be short and/or long, got {list(variants)}")
    base = _data_dir(Path(root), split)
    prompt_files = sorted((base / f"{split}_prompts").glob("*_prompts.jsonl"))
    if not prompt_files:
        raise FileNotFoundError(f"{base / f'{split}_prompts'}: no *_prompts.jsonl files")
    instances = []
    for pfile in prompt_files:
        cat = pfile.name[: -len("_prompts.jsonl")]
        efile = base / f"{split}_eval_prompts" / f"{cat}_eval_prompts.jsonl"
        prompts, evals = list(read_jsonl(pfile)), list(read_jsonl(efile))
        if len(prompts) != len(evals):
            raise SchemaError(f"{efile}: {len(evals)} lines but {pfile} has {len(prompts)} (they must align)")
        for idx, ((pwhere, p), (ewhere, e)) in enumerate(zip(prompts, evals)):
            if not isinstance(p, dict) or not isinstance(e, dict):
                raise SchemaError(f"{pwhere if not isinstance(p, dict) else ewhere}: a line must be a JSON object")
            kind = _text(pwhere, p, "type")
            if e.get("type", kind) != kind:
                raise SchemaError(f"{ewhere}: type {e.get('type')!r} differs from {pwhere}'s {kind!r}")
            questions, answers = e.get("yn_question_list"), e.get("yn_answer_list")
            if not isinstance(questions, list) or not questions or not all(isinstance(q, str) and q.strip() for q in questions):
                raise SchemaError(f"{ewhere}: field 'yn_question_list' must be a non-empty list of strings")
            if not isinstance(answers, list) or len(answers) != len(questions):
                raise SchemaError(f"{ewhere}: field 'yn_answer_list' must have one answer per question ({len(questions)})")
            gold = [a.strip().lower() if isinstance(a, str) else a for a in answers]
            if any(a not in ("yes", "no") for a in gold):
                raise SchemaError(f"{ewhere}: field 'yn_answer_list' must hold yes or no, got {answers}")
            qs = tuple(Question(f"yn{j}", "yesno", q, a) for j, (q, a) in enumerate(zip(questions, gold)))
            for variant in variants:
                desc = VARIANTS[variant]
                meta = {"tiif": {"split": split, "type": kind, "desc": desc, "jsonl_file": efile.name, "line_idx": idx}}
                instances.append(Instance(f"tiif-{split}/{kind}/{variant}/{idx}", kind, _text(pwhere, p, desc), qs, meta))
    return instances


def _json_object(reply: str):
    start, end = reply.find("{"), reply.rfind("}")
    if start < 0 or end <= start:
        return None
    try:
        obj = json.loads(reply[start : end + 1])
    except ValueError:
        return None
    return obj if isinstance(obj, dict) else None


def parse_extra(reply: str, num_no: int, num_mc: int) -> tuple[list[str], list[dict], list[str]]:
    """(no questions, mc questions, reasons for what was rejected) from a writer's reply."""
    obj = _json_object(reply)
    if obj is None:
        return [], [], ["no JSON object in the reply"]
    rejected, nos, mcs = [], [], []
    for q in obj.get("no", []) if isinstance(obj.get("no"), list) else []:
        if isinstance(q, str) and q.strip() and q.strip() not in nos:
            nos.append(q.strip())
        else:
            rejected.append(f"bad no question {q!r}")
    for m in obj.get("mc", []) if isinstance(obj.get("mc"), list) else []:
        ok = (isinstance(m, dict) and isinstance(m.get("question"), str) and m["question"].strip()
              and isinstance(m.get("options"), list) and len(m["options"]) >= 2
              and all(isinstance(o, str) and o.strip() for o in m["options"])
              and len(set(m["options"])) == len(m["options"]) and m.get("answer") in m["options"])
        if ok:
            mcs.append({"question": m["question"].strip(), "options": list(m["options"]), "answer": m["answer"]})
        else:
            rejected.append(f"bad mc question {m!r}")
    if len(nos) > num_no:
        rejected.append(f"{len(nos) - num_no} no questions beyond the {num_no} asked")
    if len(mcs) > num_mc:
        rejected.append(f"{len(mcs) - num_mc} mc questions beyond the {num_mc} asked")
    return nos[:num_no], mcs[:num_mc], rejected


def build_extra_items(instances: list[Instance], client, out_path, num_mc: int = 2, batch: int = 64,
                      log=print) -> list[Instance]:
    """Instances with the writer's accepted "no" (``no0``, ...) and multiple-choice (``mc0``, ...) questions
    added; written to ``out_path`` with every reply in ``<out_path stem>.review.jsonl``."""
    out_path = Path(out_path)
    asks = []
    for inst in instances:
        golds = [q.answer for q in inst.questions if q.type == "yesno"]
        asks.append((max(0, golds.count("yes") - golds.count("no")), num_mc))
    prompts = [BUILD_TEMPLATE.format(prompt=inst.prompt, num_no=n, num_mc=m) for inst, (n, m) in zip(instances, asks)]
    replies = []
    for start in range(0, len(prompts), batch):
        replies += client.complete(prompts[start : start + batch])
        log(f"[unicycle] builder: {len(replies)}/{len(prompts)} replies")
    built, review = [], []
    totals = {"asked_no": 0, "added_no": 0, "asked_mc": 0, "added_mc": 0, "unparsed_replies": 0}
    for inst, (num_no, num_mc_), reply in zip(instances, asks, replies):
        nos, mcs, rejected = parse_extra(reply, num_no, num_mc_)
        extra = [Question(f"no{j}", "yesno", q, "no") for j, q in enumerate(nos)]
        extra += [Question(f"mc{j}", "mc", m["question"], m["answer"], tuple(m["options"])) for j, m in enumerate(mcs)]
        meta = {**inst.meta, "extra_items": {"writer": client.name, "ours": True}}
        built.append(Instance(inst.id, inst.category, inst.prompt, inst.questions + tuple(extra), meta))
        review.append({"id": inst.id, "prompt": inst.prompt, "reply": reply, "added": [q.to_dict() for q in extra],
                       "rejected": rejected})
        totals["asked_no"] += num_no
        totals["asked_mc"] += num_mc_
        totals["added_no"] += len(nos)
        totals["added_mc"] += len(mcs)
        totals["unparsed_replies"] += _json_object(reply) is None
    write_instances(out_path, built)
    write_jsonl(out_path.with_name(out_path.stem + ".review.jsonl"), review)
    log(f"[unicycle] builder: added {totals['added_no']}/{totals['asked_no']} no and {totals['added_mc']}/"
        f"{totals['asked_mc']} mc questions; {totals['unparsed_replies']} replies without JSON; wrote {out_path}")
    return built


def write_tiif_outputs(report: dict, instances: list[Instance], out_dir, model_name: str) -> int:
    """One TIIF judge-output JSON per TIIF instance of ``report``; returns how many were written."""
    by_id = {entry["id"]: entry for entry in report["instances"]}
    root = Path(out_dir) / "tiif_eval" / (Path(model_name).name or "model")
    written = 0
    for inst in instances:
        tiif = inst.meta.get("tiif")
        if not tiif or inst.id not in by_id:
            continue
        answered = {q["id"]: q.get("answer") or "" for q in by_id[inst.id]["questions"]}
        own = [q for q in inst.questions if q.id.startswith("yn")]
        record = {"attribute": tiif["type"], "desc": tiif["desc"], "jsonl_file": tiif["jsonl_file"],
                  "line_idx": tiif["line_idx"], "questions": [q.question for q in own],
                  "gt_answers": [q.answer for q in own],
                  "model_pred": [yes_no(answered[q.id]) or "none" for q in own],
                  "model_output": "\n".join(answered[q.id].strip() for q in own)}
        path = root / tiif["type"] / ("long" if tiif["desc"].startswith("long") else "short") / f"{tiif['line_idx']}.json"
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp = path.with_name(path.name + ".tmp")
        tmp.write_text(json.dumps(record, ensure_ascii=False, indent=2), encoding="utf-8")
        tmp.replace(path)
        written += 1
    return written
