"""UniCycle on the toy world's test split: the toy model's Soft and Hard beside floors and a decomposition.

    model            the model draws each prompt (the toyworld recipe's one-image settings, per seed), answers every
                     question from its own image; rule judge (mc / yesno), the world's grader (open)
    floors           answers that ignore the image, scored the same way: always "yes"; the first option ("yes" for
                     yes/no, "" for open / text); the blind answerer (unicorn/toyworld/model/floors.py: the answer
                     most often right for the question's text on the val split)
    decomposition    the oracle reading the model's drawings (what a perfect reader recovers: the drawing's share);
                     the model reading the prompts' clean renders (its understanding without its drawing); the
                     oracle reading the clean renders (the set's own consistency check, should be 100)

    nice -n 15 env OMP_NUM_THREADS=1 PYTHONPATH=. .venv/bin/python bench/unicycle/measure.py --prompts 180 --seeds 0,1,2
Writes bench/unicycle/results.json and prints a markdown table. Our reconstruction of UniCycle, not the paper's set.
"""
from __future__ import annotations

import argparse
import json
import platform
import time
from pathlib import Path

import numpy as np
from PIL import Image

from unicorn import Engine
from unicorn.engine.params import SamplingParams
from unicorn.toyworld.model import default_model_path
from unicorn.toyworld.model.data import make_item
from unicorn.toyworld.model.floors import BlindAnswerer, mean_se
from unicorn.toyworld.oracle import judge as oracle_judge
from unicorn.toyworld.roles import question_text
from unicorn.toyworld.scene import CATEGORIES
from unicorn.unicycle.judges import RuleJudge
from unicorn.unicycle.runner import RunConfig, ask, question_request, run, score
from unicorn.unicycle.toyworld_set import recipe_image_settings, toyworld_instances


def items_for(instances, split="test"):
    return [make_item(i.category, int(i.meta["toyworld"]["key"].rsplit(":", 1)[1]), 0, split) for i in instances]


def scored(instances, answers, out) -> dict:
    report = score(instances, answers, RuleJudge(), out, set_name="toyworld-test", log=lambda *_: None)
    return {"overall": report["overall"], "categories": report["categories"]}


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--prompts", type=int, default=180)
    ap.add_argument("--seeds", default="0,1,2")
    ap.add_argument("--model", default=str(default_model_path()))
    ap.add_argument("--work", default="/tmp/unicycle-measure")
    ap.add_argument("--results", default=str(Path(__file__).with_name("results.json")))
    args = ap.parse_args()
    seeds = [int(s) for s in args.seeds.split(",")]
    work = Path(args.work)
    instances = toyworld_instances(args.prompts)
    items = items_for(instances)
    settings = recipe_image_settings()
    start = time.perf_counter()
    engine = Engine(args.model, num_kv_blocks=1024, seed=0)

    per_seed, drawn_by_oracle = [], []
    for seed in seeds:
        out = work / f"model-seed{seed}"
        report = run(engine, instances, RuleJudge(), out, RunConfig(**settings, seed=seed), f"toyworld-test-{args.prompts}",
                     model=args.model, log=lambda *_: None)
        per_seed.append(report)
        answers = {}
        for k, (inst, item) in enumerate(zip(instances, items)):
            image = Image.open(out / report["instances"][k]["image"]).convert("RGB")
            read = oracle_judge(item.scene, np.asarray(image), item.questions).answers
            answers[inst.id] = {q.id: read[q.id] or "none" for q in item.questions}
        drawn_by_oracle.append(scored(instances, answers, work / f"oracle-reads-drawings-seed{seed}"))

    always_yes = {i.id: {q.id: "yes" for q in i.questions} for i in instances}
    first = {i.id: {q.id: (q.options[0] if q.type == "mc" else "yes" if q.type == "yesno" else "") for q in i.questions}
             for i in instances}
    val = [make_item(CATEGORIES[k % len(CATEGORIES)], k // len(CATEGORIES), 0, "val") for k in range(args.prompts)]
    blind_model = BlindAnswerer().fit((question_text(q), q) for it in val for q in it.questions)
    blind = {i.id: {q.id: blind_model.answer(question_text(q), q) for q in it.questions} for i, it in zip(instances, items)}
    clean_oracle = {i.id: {q.id: (oracle_judge(it.scene, it.rgb, it.questions).answers[q.id] or "none")
                           for q in it.questions} for i, it in zip(instances, items)}
    requests, owners = [], []
    for inst, it in zip(instances, items):
        for q in inst.questions:
            requests.append(question_request(ask(q), Image.fromarray(it.rgb)))
            owners.append((inst.id, q.id))
    clean_model: dict = {i.id: {} for i in instances}
    for (iid, qid), out in zip(owners, engine.generate(requests, SamplingParams(temperature=0.0, max_tokens=32))):
        clean_model[iid][qid] = out.text or ""

    def agg(blocks, key):
        return mean_se(b["overall"][key] for b in blocks)

    rows = {
        "model (draws, then answers from its drawing)": [{"overall": r["overall"], "categories": r["categories"]} for r in per_seed],
        "floor: always yes": [scored(instances, always_yes, work / "floor-yes")],
        "floor: first option": [scored(instances, first, work / "floor-first")],
        "floor: blind answerer (val-split majority)": [scored(instances, blind, work / "floor-blind")],
        "oracle reads the model's drawings": drawn_by_oracle,
        "model reads the clean renders": [scored(instances, clean_model, work / "model-clean")],
        "oracle reads the clean renders": [scored(instances, clean_oracle, work / "oracle-clean")],
    }
    table = {name: {"soft": agg(b, "soft"), "hard": agg(b, "hard"),
                    "categories": {c: {"soft": mean_se(x["categories"][c]["soft"] for x in b),
                                       "hard": mean_se(x["categories"][c]["hard"] for x in b)} for c in b[0]["categories"]}}
             for name, b in rows.items()}
    result = {"benchmark": "UniCycle on the toy world's test split (our reconstruction)", "prompts": args.prompts,
              "questions": sum(len(i.questions) for i in instances), "seeds": seeds, "image_settings": settings,
              "model": args.model, "judge": "rule (mc, yesno), toy world grader (open), keyword fraction (text)",
              "device": f"cpu ({platform.processor() or platform.machine()})",
              "elapsed_s": round(time.perf_counter() - start, 1), "rows": table}
    Path(args.results).write_text(json.dumps(result, indent=1) + "\n")
    print(f"{args.prompts} prompts, {result['questions']} questions, seeds {seeds}, images at {settings}")
    print("| answers | Soft | Hard |\n|---|---|---|")
    for name, r in table.items():
        (s, se), (h, he) = r["soft"], r["hard"]
        print(f"| {name} | {s:.1f} ± {se:.1f} | {h:.1f} ± {he:.1f} |")
    cats = list(table["model (draws, then answers from its drawing)"]["categories"])
    print("\nper category (Soft / Hard):\n| answers | " + " | ".join(cats) + " |\n|---|" + "---|" * len(cats))
    for name, r in table.items():
        print(f"| {name} | " + " | ".join(f"{r['categories'][c]['soft'][0]:.0f} / {r['categories'][c]['hard'][0]:.0f}"
                                         for c in cats) + " |")
    print(f"elapsed {result['elapsed_s']} s")


if __name__ == "__main__":
    main()
