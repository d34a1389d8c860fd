"""The UniCycle report: report.json (every answer and verdict, scores overall and per category), report.md (a
table) and scores.png (Soft and Hard per category; skipped with a message when matplotlib is missing).

report.json holds nothing that changes between identical runs (no times, no host names), so a resumed run can be
compared with an uninterrupted one byte for byte."""
from __future__ import annotations

import json
from pathlib import Path

from .scoring import hard, soft, summarise

TITLE = "UniCycle (our reconstruction: the paper's data and code are unreleased)"


def build_report(instances, answers: dict[str, dict], verdicts: dict[str, dict], meta: dict) -> dict:
    rows, per_instance = [], []
    num_errors = num_missing = 0
    for inst in instances:
        record = answers.get(inst.id, {})
        given = record.get("answers", {})
        num_errors += record.get("error") is not None
        judged = verdicts[inst.id]["verdicts"]
        scores = [judged[q.id]["score"] for q in inst.questions]
        rows.append((inst.category, scores))
        questions = []
        for q in inst.questions:
            num_missing += q.id not in given
            questions.append({"id": q.id, "type": q.type, "question": q.question, "reference": q.answer,
                              "answer": given.get(q.id), **judged[q.id]})
        entry = {"id": inst.id, "category": inst.category, "prompt": inst.prompt, "soft": soft(scores),
                 "hard": hard(scores), "questions": questions}
        if record.get("image"):
            entry["image"] = record["image"]
        if record.get("error") is not None:
            entry["error"] = record["error"]
        per_instance.append(entry)
    summary = summarise(rows)
    return {"benchmark": TITLE, **meta, **summary, "image_errors": num_errors, "missing_answers": num_missing,
            "instances": per_instance}


def markdown(report: dict) -> str:
    lines = [f"# {report['benchmark']}", "",
             f"set `{report.get('set', '')}`, model `{report.get('model', 'given answers')}`, judge `{report.get('judge')}`",
             "", "| category | prompts | questions | Soft | Hard | unparsed verdicts |", "|---|---|---|---|---|---|"]
    for name, b in [*report["categories"].items(), ("**overall**", report["overall"])]:
        lines.append(f"| {name} | {b['prompts']} | {b['questions']} | {b['soft']:.1f} | {b['hard']:.1f} | {b['unparsed']} |")
    lines += ["", "Soft = 100 x mean over prompts of the mean s_q; Hard = 100 x share of prompts with every s_q = 1 "
              "(unicorn/unicycle/scoring.py)."]
    if report["image_errors"] or report["missing_answers"]:
        lines.append(f"Image errors: {report['image_errors']}; missing answers: {report['missing_answers']} (scored 0).")
    return "\n".join(lines) + "\n"


def plot(report: dict, path: Path, log=print) -> bool:
    """Soft and Hard bars per category (and overall) to ``path``; False (with a message) without matplotlib."""
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        log("[unicycle] matplotlib is not installed: no plot (pip install 'unicorn-umm[plot]')")
        return False
    names = [*report["categories"], "overall"]
    blocks = [*report["categories"].values(), report["overall"]]
    x = range(len(names))
    fig, ax = plt.subplots(figsize=(max(5.0, 0.8 * len(names) + 2), 3.5))
    ax.bar([i - 0.2 for i in x], [b["soft"] for b in blocks], width=0.4, label="Soft")
    ax.bar([i + 0.2 for i in x], [b["hard"] for b in blocks], width=0.4, label="Hard")
    ax.set_xticks(list(x), names, rotation=30, ha="right")
    ax.set_ylim(0, 100)
    ax.set_ylabel("score (0-100)")
    ax.set_title(f"UniCycle: {report.get('set', '')}")
    ax.legend()
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)
    return True


def write_report(out_dir, report: dict, log=print) -> None:
    out_dir = Path(out_dir)
    for name, text in (("report.json", json.dumps(report, indent=1, ensure_ascii=False) + "\n"),
                       ("report.md", markdown(report))):
        tmp = out_dir / (name + ".tmp")
        tmp.write_text(text, encoding="utf-8")
        tmp.replace(out_dir / name)
    plot(report, out_dir / "scores.png", log)
    o = report["overall"]
    log(f"[unicycle] Soft {o['soft']:.1f}  Hard {o['hard']:.1f}  over {o['prompts']} prompts "
        f"({o['unparsed']} unparsed verdicts); wrote {out_dir}/report.json, report.md")
