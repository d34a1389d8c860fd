"""``unicorn toyworld pretrain`` and ``unicorn toyworld eval``: build and measure the toy-world Janus.

    unicorn toyworld pretrain --out DIR --seed 0 [--quick] [--self-drawn-steps N]
    unicorn toyworld eval [--model DIR] [--out report.json] [--split val|test] [--scenes 12] [--prompts 8] [--samples 4]
"""
from __future__ import annotations

import argparse
import json


def int_at_least(low: int):
    """An argparse type: an int >= low, so a bad round-2 setting is refused before round 1 spends its minutes."""
    def parse(text: str) -> int:
        value = int(text)
        if value < low:
            raise argparse.ArgumentTypeError(f"must be an integer >= {low}, got {value}")
        return value
    return parse


def _add_pretrain(sub) -> None:
    p = sub.add_parser("pretrain", help="rebuild the toy-world Janus from scratch (tokenizer, VQ, data, LM)")
    p.add_argument("--out", required=True, help="checkpoint directory to write (engine layout)")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--quick", action="store_true", help="a minute-scale run of the same pipeline (tests)")
    p.add_argument("--work-dir", default=None, help="intermediate files (default: OUT.work)")
    p.add_argument("--lm-steps", type=int, default=None, help="override the LM training steps")
    p.add_argument("--self-drawn-steps", type=int_at_least(0), default=None,
                   help="a second LM round of this many steps on oracle judgements of the model's own drawings (0: off)")
    p.add_argument("--self-drawn-per-prompt", type=int_at_least(1), default=None,
                   help="round-2 drawings per train prompt")


def _add_eval(sub) -> None:
    # No import of the evaluation module (torch) here: `unicorn --help` builds this parser too.
    p = sub.add_parser("eval", help="judge / understanding / generation quality, measured by the oracle")
    p.add_argument("--model", default=None, help="checkpoint directory (default: the shipped toy-world model)")
    p.add_argument("--out", default=None, help="JSON report path (default: ./toyworld-eval.json)")
    p.add_argument("--split", choices=("val", "test"), default="val",
                   help="held-out split (toyworld/splits.py): val for choosing, test for the numbers you report")
    p.add_argument("--scenes", type=int, default=12, help="held-out scenes per category for judging and questions")
    p.add_argument("--prompts", type=int, default=8, help="held-out prompts per category to draw")
    p.add_argument("--samples", type=int, default=4, help="drawings per prompt (best-of-n, the judge's pick)")
    p.add_argument("--cfg-scale", type=float, default=None, help="default: the measured setting (EvalConfig)")
    p.add_argument("--temperature", type=float, default=None, help="default: the measured setting (EvalConfig)")
    p.add_argument("--seed", type=int, default=0)


def _add_commands(parser: argparse.ArgumentParser) -> None:
    sub = parser.add_subparsers(dest="toyworld_command", required=True)
    _add_pretrain(sub)
    _add_eval(sub)
    parser.set_defaults(func=run)


def build_parser() -> argparse.ArgumentParser:
    """The stand-alone parser (``python -m unicorn.toyworld.cli``)."""
    parser = argparse.ArgumentParser(prog="unicorn toyworld", description=__doc__.splitlines()[0])
    _add_commands(parser)
    return parser


def add_subparser(sub) -> argparse.ArgumentParser:
    """Adds ``toyworld`` (with ``pretrain`` and ``eval``) to the ``unicorn`` command's subparsers."""
    parser = sub.add_parser("toyworld", help="rebuild (pretrain) or measure (eval) the embedded toy-world model",
                            description=__doc__.splitlines()[0])
    _add_commands(parser)
    return parser


def cmd_pretrain(args) -> dict:
    from dataclasses import replace

    from unicorn.toyworld.pretrain import PretrainConfig, pretrain

    cfg = PretrainConfig.quick(args.seed) if args.quick else PretrainConfig().with_seed(args.seed)
    if args.lm_steps:
        cfg = replace(cfg, lm=replace(cfg.lm, steps=args.lm_steps))
    if args.self_drawn_steps is not None:
        cfg = replace(cfg, self_drawn=replace(cfg.self_drawn, steps=args.self_drawn_steps))
    if args.self_drawn_per_prompt is not None:
        cfg = replace(cfg, self_drawn=replace(cfg.self_drawn, drawings_per_prompt=args.self_drawn_per_prompt))
    return pretrain(args.out, cfg, work_dir=args.work_dir)


def cmd_eval(args) -> dict:
    from unicorn.engine.llm_engine import Engine
    from unicorn.toyworld.model import default_model_path
    from unicorn.toyworld.model.evaluate import EvalConfig, evaluate

    model = args.model or str(default_model_path())
    engine = Engine(model, seed=args.seed)
    cfg = EvalConfig(scenes_per_category=args.scenes, prompts_per_category=args.prompts,
                     samples_per_prompt=args.samples,
                     cfg_scale=EvalConfig.cfg_scale if args.cfg_scale is None else args.cfg_scale,
                     temperature=EvalConfig.temperature if args.temperature is None else args.temperature,
                     seed=args.seed, split=args.split)
    report = {"model": model, **evaluate(engine, cfg, vq=engine.model.vqmodel)}
    print(format_report(report))
    out = args.out or "toyworld-eval.json"
    with open(out, "w") as f:
        json.dump(report, f, indent=2)
    print(f"wrote {out}")
    return report


def format_report(r: dict) -> str:
    j, u, g = r["judge"], r["understanding"], r["generation"]
    lines = [
        f"judge: Spearman {j['spearman']:.3f} vs the oracle on {j['n']} held-out ({r.get('config', {}).get('split', '?')}) images "
        f"(parse rate {j['parse_rate']:.2f}, mean |error| {j['mean_abs_error']}); on its own drawings: "
        f"{r['judge_on_own_drawings']['spearman']:.3f}",
        f"understanding: accuracy {u['accuracy']:.3f} on {u['n']} questions "
        + " ".join(f"{t} {v:.2f}" for t, v in u["per_type"].items()),
        f"generation: oracle accuracy {g['oracle_accuracy']:.3f}, mean score {g['mean_score']:.2f}, "
        f"pass rate (>= 8) {g['pass_rate']:.3f} on {g['n']} images; per prompt: best-of-n pass rate "
        f"{g['best_of_n_pass_rate']:.3f}, best score {g['best_score']:.2f}, the judge's pick {g['judge_pick_score']:.2f}; "
        f"judge pair accuracy within a prompt {g['judge_pair_accuracy']:.3f} on {g['judge_pairs']} pairs (chance 0.5)",
    ]
    codec = r.get("codec_roundtrip")
    if codec:
        lines.append(f"codec round trip of the prompts' clean renders (the drawing ceiling): mean score "
                     f"{codec['mean_score']:.2f}, pass rate {codec['pass_rate']:.3f}")
    lines += [
        f"{'category':<12} {'und. acc':>8} {'gen acc':>8} {'gen score':>9} {'gen pass':>8} {'best-of-n':>9} {'pick':>5}",
    ]
    for c, v in g["per_category"].items():
        lines.append(f"{c:<12} {u['per_category'].get(c, float('nan')):>8.3f} {v['oracle_accuracy']:>8.3f} "
                     f"{v['mean_score']:>9.2f} {v['pass_rate']:>8.3f} {v['best_of_n_pass_rate']:>9.3f} "
                     f"{v['judge_pick_score']:>5.2f}")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    return run(build_parser().parse_args(argv))


def run(args: argparse.Namespace) -> int:
    {"pretrain": cmd_pretrain, "eval": cmd_eval}[args.toyworld_command](args)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
