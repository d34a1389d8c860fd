"""The UniCycle loop: prompt -> one image (fixed seed) -> each question answered from the image alone -> judged.

Per batch of instances: one ``Engine.generate_images`` call draws every prompt's image (n=1, the run's seed, CFG
and temperature), then one ``Engine.generate`` call answers every question of those images, greedily, each as its
own request holding the image and the question only (never the prompt). Each instance's answers are appended to
``answers.jsonl`` as one durable line (store.py), so a stopped run continues with the first unanswered instance;
verdicts go to ``verdicts.jsonl`` the same way. The report is built from those files alone, so a resumed run
writes the same report, byte for byte, as an uninterrupted one whenever the engine is batch-invariant (it is in
fp32 on CPU: same seed, same tokens whatever the batch; see README, Sampler).

Out dir: run.json (what the answers and verdicts depend on; a resume with other settings is refused),
instances.jsonl, images/NNNNN.png, answers.jsonl, verdicts.jsonl, report.json, report.md, scores.png.
"""
from __future__ import annotations

import hashlib
import json
import os
from dataclasses import asdict, dataclass
from pathlib import Path

from .judges import Item
from .report import build_report, write_report
from .schema import Instance, Question, write_instances
from .store import append_record, read_records


@dataclass(frozen=True)
class RunConfig:
    cfg_scale: float = 5.0
    temperature: float = 1.0
    seed: int = 0
    max_answer_tokens: int = 32
    batch: int = 32  # instances per engine call
    save_images: bool = True

    def __post_init__(self):
        if self.batch < 1 or self.max_answer_tokens < 1:
            raise ValueError("RunConfig.batch and max_answer_tokens must be >= 1")


def ask(q: Question) -> str:
    """The question as put to the model (the toy world's own wording: unicorn/toyworld/roles.question_text)."""
    text = q.question.strip()
    if q.type == "mc":
        return f"{text} Options: {', '.join(q.options)}."
    if q.type == "yesno" and "yes or no" not in text.lower():
        return f"{text} Answer yes or no."
    return text


def question_request(question: str, image) -> dict:
    return {"messages": [{"role": "user", "content": [{"type": "image", "image": image},
                                                      {"type": "text", "text": question}]}]}


def _check_manifest(out_dir: Path, manifest: dict) -> None:
    path = out_dir / "run.json"
    if path.exists():
        old = json.loads(path.read_text())
        changed = [k for k in manifest if old.get(k) != manifest[k]]
        if changed:
            raise ValueError(f"{path}: this out dir holds a run with another {', '.join(changed)}; "
                             "use a new --out (or `unicorn unicycle score` to re-judge its answers)")
    else:
        tmp = path.with_name("run.json.tmp")
        tmp.write_text(json.dumps(manifest, indent=1, sort_keys=True) + "\n")
        tmp.replace(path)


def answer_instances(engine, instances: list[Instance], out_dir: Path, cfg: RunConfig, log=print) -> dict[str, dict]:
    """Draws and answers every instance not yet in answers.jsonl; returns all answer records by id."""
    from unicorn.engine.params import ImageGenParams, SamplingParams

    path = out_dir / "answers.jsonl"
    done = read_records(path)
    index = {inst.id: k for k, inst in enumerate(instances)}
    todo = [inst for inst in instances if inst.id not in done]
    if done:
        log(f"[unicycle] resuming: {len(instances) - len(todo)} of {len(instances)} instances already answered")
    image_params = ImageGenParams(n=1, cfg_scale=cfg.cfg_scale, temperature=cfg.temperature, seed=cfg.seed)
    text_params = SamplingParams(temperature=0.0, max_tokens=cfg.max_answer_tokens)
    if cfg.save_images:
        (out_dir / "images").mkdir(exist_ok=True)
    for start in range(0, len(todo), cfg.batch):
        chunk = todo[start : start + cfg.batch]
        drawn = engine.generate_images([inst.prompt for inst in chunk], image_params)
        requests, owners = [], []
        for inst, out in zip(chunk, drawn):
            if out.error is None:
                for q in inst.questions:
                    requests.append(question_request(ask(q), out.images[0]))
                    owners.append((inst.id, q.id))
        replies = dict(zip(owners, engine.generate(requests, text_params))) if requests else {}
        for inst, out in zip(chunk, drawn):
            record = {"id": inst.id, "answers": {}, "error": out.error}
            if out.error is None:
                if cfg.save_images:
                    name = f"images/{index[inst.id]:05d}.png"
                    out.images[0].save(out_dir / (name + ".tmp.png"))
                    os.replace(out_dir / (name + ".tmp.png"), out_dir / name)
                    record["image"] = name
                for q in inst.questions:
                    reply = replies[(inst.id, q.id)]
                    record["answers"][q.id] = (reply.text or "") if reply.error is None else ""
            append_record(path, record)
            done[inst.id] = record
        log(f"[unicycle] answered {len(instances) - len(todo) + start + len(chunk)}/{len(instances)} instances")
    return done


def judge_answers(judge, instances: list[Instance], answers: dict[str, dict], out_dir: Path, batch: int = 64,
                  log=print) -> dict[str, dict]:
    """Judges every instance not yet in verdicts.jsonl (a missing answer is judged as ""); all verdicts by id."""
    path = out_dir / "verdicts.jsonl"
    done = read_records(path)
    todo = [inst for inst in instances if inst.id not in done]
    for start in range(0, len(todo), batch):
        chunk = todo[start : start + batch]
        items, owners = [], []
        for inst in chunk:
            given = answers.get(inst.id, {}).get("answers", {})
            for q in inst.questions:
                items.append(Item(inst.prompt, q, given.get(q.id, "")))
                owners.append((inst.id, q.id))
        verdicts = dict(zip(owners, judge.judge(items)))
        for inst in chunk:
            record = {"id": inst.id, "verdicts": {q.id: verdicts[(inst.id, q.id)].to_dict() for q in inst.questions}}
            append_record(path, record)
            done[inst.id] = record
        log(f"[unicycle] judged {len(instances) - len(todo) + start + len(chunk)}/{len(instances)} instances")
    return done


def _digest(instances: list[Instance]) -> str:
    text = "".join(json.dumps(inst.to_dict(), sort_keys=True) + "\n" for inst in instances)
    return hashlib.sha256(text.encode()).hexdigest()


def run(engine, instances: list[Instance], judge, out_dir, cfg: RunConfig = RunConfig(), set_name: str = "data",
        model: str = "", log=print) -> dict:
    """The whole benchmark on ``instances``; resumable in ``out_dir``. Returns the report (also written there)."""
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    manifest = {"set": set_name, "instances_sha256": _digest(instances), "model": model, "judge": judge.name,
                "settings": asdict(cfg)}
    _check_manifest(out_dir, manifest)
    write_instances(out_dir / "instances.jsonl", instances)
    answers = answer_instances(engine, instances, out_dir, cfg, log)
    verdicts = judge_answers(judge, instances, answers, out_dir, log=log)
    report = build_report(instances, answers, verdicts, {k: v for k, v in manifest.items() if k != "instances_sha256"})
    write_report(out_dir, report, log)
    return report


def score(instances: list[Instance], given: dict[str, dict[str, str]], judge, out_dir, set_name: str = "data",
          log=print) -> dict:
    """Judges and scores given answers (``{instance id: {question id: text}}``); every instance needs a line."""
    missing = [inst.id for inst in instances if inst.id not in given]
    if missing:
        raise ValueError(f"the answers file has no line for instance {missing[0]!r} ({len(missing)} missing)")
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    manifest = {"set": set_name, "instances_sha256": _digest(instances), "judge": judge.name, "answers": "given"}
    _check_manifest(out_dir, manifest)
    answers = {iid: {"id": iid, "answers": a, "error": None} for iid, a in given.items()}
    verdicts = judge_answers(judge, instances, answers, out_dir, log=log)
    report = build_report(instances, answers, verdicts, {k: v for k, v in manifest.items() if k != "instances_sha256"})
    write_report(out_dir, report, log)
    return report
