"""`unicorn unicycle run|score`: the UniCycle benchmark (unicorn/unicycle/__init__.py)."""
from __future__ import annotations

import argparse


def add_subparser(sub) -> argparse.ArgumentParser:
    p = sub.add_parser("unicycle", help="UniCycle: text -> image -> text benchmark (Soft and Hard scores)")
    commands = p.add_subparsers(dest="unicycle_command", required=True, metavar="COMMAND")
    r = commands.add_parser("run", help="draw each prompt, answer its questions from the image alone, judge, score")
    r.add_argument("--model", default=None, help="checkpoint directory (default: the embedded toy-world model)")
    source = r.add_mutually_exclusive_group(required=True)
    source.add_argument("--data", help="instances JSONL in our schema (unicorn/unicycle/schema.py)")
    source.add_argument("--tiif", metavar="DIR", help="a TIIF-Bench checkout (reads DIR/data/<split>_prompts ...)")
    source.add_argument("--toyworld", type=int, metavar="N", help="N prompts of the toy world's test split")
    r.add_argument("--tiif-split", default="testmini", choices=["test", "testmini"])
    r.add_argument("--tiif-variants", default="short,long", help="short, long or short,long")
    r.add_argument("--tiif-extra", default=None, help="instances JSONL from the no / mc builder to use instead")
    _judge_args(r)
    r.add_argument("--out", required=True)
    r.add_argument("--cfg-scale", type=float, default=None, help="default: 5.0 (toy world: the recipe's)")
    r.add_argument("--temperature", type=float, default=None, help="default: 1.0 (toy world: the recipe's)")
    r.add_argument("--seed", type=int, default=0)
    r.add_argument("--batch", type=int, default=32, help="instances per engine call")
    r.add_argument("--max-answer-tokens", type=int, default=32)
    _engine_args(r)
    r.set_defaults(func=cmd_run)
    s = commands.add_parser("score", help="judge and score given answers (JSONL: id, answers keyed by question id)")
    s.add_argument("--data", required=True)
    s.add_argument("--answers", required=True)
    s.add_argument("--out", required=True)
    _judge_args(s)
    _engine_args(s)
    s.set_defaults(func=cmd_score)
    b = commands.add_parser("tiif-build", help="add balanced 'no' and multiple-choice items to TIIF prompts")
    b.add_argument("--tiif", required=True, metavar="DIR")
    b.add_argument("--tiif-split", default="testmini", choices=["test", "testmini"])
    b.add_argument("--tiif-variants", default="short,long")
    b.add_argument("--writer", required=True, help="model:PATH or openai:URL")
    b.add_argument("--writer-model", default="gpt-4o", help="model name for openai:URL")
    b.add_argument("--out", required=True, help="instances JSONL to write (a .review.jsonl is written beside it)")
    _engine_args(b)
    b.set_defaults(func=cmd_tiif_build)
    return p


def _judge_args(p) -> None:
    p.add_argument("--judge", default="rule", help="rule | model:PATH | openai:URL (default: rule)")
    p.add_argument("--judge-model", default="gpt-4o", help="model name sent to an openai:URL judge")


def _engine_args(p) -> None:
    p.add_argument("--device", default="cpu")
    p.add_argument("--dtype", default="float32")
    p.add_argument("--num-kv-blocks", type=int, default=None)


def _engine_kwargs(args) -> dict:
    return {"device": args.device, "dtype": args.dtype, "num_kv_blocks": args.num_kv_blocks}


def _instances(args):
    from .schema import load_instances
    from .tiif import read_tiif
    from .toyworld_set import recipe_image_settings, toyworld_instances

    if args.toyworld is not None:
        return toyworld_instances(args.toyworld, args.seed), f"toyworld-test-{args.toyworld}", recipe_image_settings()
    if args.tiif is not None:
        if args.tiif_extra:
            return load_instances(args.tiif_extra), f"tiif-{args.tiif_split}+extra", {}
        variants = tuple(v.strip() for v in args.tiif_variants.split(","))
        return read_tiif(args.tiif, args.tiif_split, variants), f"tiif-{args.tiif_split}", {}
    return load_instances(args.data), args.data, {}


def cmd_run(args) -> int:
    from unicorn.engine.llm_engine import Engine
    from unicorn.toyworld.model import default_model_path

    from .judges import make_judge
    from .runner import RunConfig, run
    from .tiif import write_tiif_outputs

    instances, set_name, defaults = _instances(args)
    judge = make_judge(args.judge, _engine_kwargs(args), args.judge_model)
    model = args.model or str(default_model_path())
    cfg = RunConfig(cfg_scale=args.cfg_scale if args.cfg_scale is not None else defaults.get("cfg_scale", 5.0),
                    temperature=args.temperature if args.temperature is not None else defaults.get("temperature", 1.0),
                    seed=args.seed, max_answer_tokens=args.max_answer_tokens, batch=args.batch)
    engine = Engine(model, seed=args.seed, **_engine_kwargs(args))
    report = run(engine, instances, judge, args.out, cfg, set_name, model=model)
    if args.tiif is not None:
        write_tiif_outputs(report, instances, args.out, model_name=model)
    return 0


def cmd_score(args) -> int:
    from .judges import make_judge
    from .runner import score
    from .schema import load_answers, load_instances

    instances = load_instances(args.data)
    score(instances, load_answers(args.answers), make_judge(args.judge, _engine_kwargs(args), args.judge_model),
          args.out, set_name=args.data)
    return 0


def cmd_tiif_build(args) -> int:
    from .clients import EngineClient, OpenAIClient
    from .tiif import build_extra_items, read_tiif

    kind, _, target = args.writer.partition(":")
    if kind == "model" and target:
        from unicorn.engine.llm_engine import Engine

        client = EngineClient(Engine(target, **_engine_kwargs(args)), max_tokens=256, name=target)
    elif kind == "openai" and target:
        client = OpenAIClient(target, model=args.writer_model)
    else:
        raise ValueError(f"unknown writer {args.writer!r} (expected model:PATH or openai:URL)")
    variants = tuple(v.strip() for v in args.tiif_variants.split(","))
    build_extra_items(read_tiif(args.tiif, args.tiif_split, variants), client, args.out)
    return 0
