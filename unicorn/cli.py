"""The `unicorn` command line. Errors print one line (no traceback) and exit with status 2."""
from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path


def _engine(args):
    from unicorn.engine.llm_engine import Engine
    from unicorn.toyworld.model import default_model_path

    if args.model is None:
        args.model = str(default_model_path())
    return Engine(args.model, device=args.device, dtype=args.dtype, num_kv_blocks=args.num_kv_blocks,
                  seed=args.seed)


def cmd_demo(args) -> None:
    """Draws toy-world prompts with the model, has the same model judge each image, and grades both with the
    world's oracle (the ground truth the model never sees)."""
    import random

    from unicorn.engine.params import ImageGenParams, SamplingParams
    from unicorn.toyworld import make_prompt
    from unicorn.toyworld.oracle import judge as oracle_judge
    from unicorn.toyworld.sampler import sample_scene
    from unicorn.toyworld.model.evaluate import EvalConfig, judge_request

    out_dir = Path(args.out)
    out_dir.mkdir(parents=True, exist_ok=True)
    engine = _engine(args)
    rng = random.Random(args.seed)
    scenes = [sample_scene(category, rng) for category in ("attribute", "counting", "spatial", "text")]
    prompts = [make_prompt(scene, rng) for scene in scenes]
    start = time.perf_counter()
    # the drawing settings the toy model is measured with (bench/toyworld/README.md)
    params = ImageGenParams(n=args.n, cfg_scale=EvalConfig.cfg_scale, temperature=EvalConfig.temperature, seed=args.seed)
    images = engine.generate_images(prompts, params, progress=True)
    image_time = time.perf_counter() - start
    records, judge_prompts = [], []
    for scene, prompt, output in zip(scenes, prompts, images):
        for i, image in enumerate(output.images):
            name = f"img_{len(records):03d}.png"
            image.save(out_dir / name)
            records.append({"prompt": prompt, "category": scene.category, "image": name, "seed": args.seed,
                            "sample": i, "oracle_score": oracle_judge(scene, image).score})
            judge_prompts.append(judge_request(prompt, image))
    start = time.perf_counter()
    judgements = engine.generate(judge_prompts, SamplingParams(max_tokens=48, temperature=0.0), progress=True)
    judge_time = time.perf_counter() - start
    for record, judgement in zip(records, judgements):
        record["judgement"] = judgement.text
    tmp = out_dir / "results.jsonl.tmp"
    tmp.write_text("".join(json.dumps(r) + "\n" for r in records))
    tmp.replace(out_dir / "results.jsonl")
    num_images = len(records)
    print(f"model: {args.model}")
    for record in records[:: max(1, args.n)]:
        print(f"  {record['image']}  {record['prompt']!r}\n      judge: {record['judgement']!r}  oracle: {record['oracle_score']:.0f}/10")
    print(f"{num_images} images in {image_time:.1f}s ({num_images / image_time:.2f} img/s); "
          f"{len(judgements)} judgements in {judge_time:.1f}s")
    print(f"prefix-cache hits: {engine.stats.prefix_hit_tokens}/{engine.stats.prefix_query_tokens} prompt tokens; "
          f"preemptions: {engine.stats.num_preemptions}")
    print(f"wrote {out_dir}/results.jsonl and {num_images} PNGs")


def cmd_generate(args) -> None:
    from unicorn.engine.params import SamplingParams

    engine = _engine(args)
    params = SamplingParams(n=args.n, temperature=args.temperature, top_k=args.top_k, top_p=args.top_p,
                            max_tokens=args.max_tokens, seed=args.seed)
    for output in engine.generate(args.prompt, params):
        if output.error:
            print(f"error: {output.error}")
            continue
        for sample in output.samples:
            print(json.dumps({"text": sample.text, "finish_reason": sample.finish_reason}))


def cmd_generate_images(args) -> None:
    from unicorn.engine.params import ImageGenParams

    engine = _engine(args)
    params = ImageGenParams(n=args.n, cfg_scale=args.cfg_scale, temperature=args.temperature, top_k=args.top_k,
                            top_p=args.top_p, seed=args.seed)
    out_dir = Path(args.out)
    out_dir.mkdir(parents=True, exist_ok=True)
    for output in engine.generate_images(args.prompt, params, progress=True):
        if output.error:
            print(f"error: {output.error}")
            continue
        for i, image in enumerate(output.images):
            path = out_dir / f"img_{output.request_id:03d}_{i}.png"
            image.save(path)
            print(path)


def _common(p: argparse.ArgumentParser) -> None:
    p.add_argument("--model", default=None, help="checkpoint directory (default: the embedded toy-world model)")
    p.add_argument("--device", default="cpu")
    p.add_argument("--dtype", default="float32")
    p.add_argument("--num-kv-blocks", type=int, default=None)
    p.add_argument("--seed", type=int, default=0)


def _sampling(p: argparse.ArgumentParser, temperature: float) -> None:
    p.add_argument("--n", type=int, default=1)
    p.add_argument("--temperature", type=float, default=temperature)
    p.add_argument("--top-k", type=int, default=0)
    p.add_argument("--top-p", type=float, default=1.0)


def build_parser() -> argparse.ArgumentParser:
    """One argparse tree for every command; the stages with their own modules add their subparsers."""
    from unicorn.selfplay import cli as selfplay_cli
    from unicorn.toyworld import cli as toyworld_cli
    from unicorn.training import cli as training_cli
    from unicorn.unicycle import cli as unicycle_cli

    parser = argparse.ArgumentParser(prog="unicorn", description=__doc__)
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    p = sub.add_parser("demo", help="draw and judge toy-world images with the embedded default model")
    _common(p)
    p.add_argument("--n", type=int, default=2, help="images per prompt")
    p.add_argument("--out", default="out/demo")
    p.set_defaults(func=cmd_demo)
    p = sub.add_parser("generate", help="text generation")
    _common(p)
    _sampling(p, temperature=0.0)
    p.add_argument("--max-tokens", type=int, default=64)
    p.add_argument("prompt", nargs="+")
    p.set_defaults(func=cmd_generate)
    p = sub.add_parser("generate-images", help="image generation")
    _common(p)
    _sampling(p, temperature=1.0)
    p.add_argument("--cfg-scale", type=float, default=5.0)
    p.add_argument("--out", default="out/images")
    p.add_argument("prompt", nargs="+")
    p.set_defaults(func=cmd_generate_images)
    training_cli.add_subparser(sub)
    toyworld_cli.add_subparser(sub)
    selfplay_cli.add_subparser(sub)
    unicycle_cli.add_subparser(sub)
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(sys.argv[1:] if argv is None else list(argv))
    try:
        status = args.func(args)
    except (ValueError, FileNotFoundError, NotADirectoryError) as err:  # CheckpointError, RequestError, bad params
        message = str(err).splitlines()[0] if str(err) else type(err).__name__
        print(f"unicorn: error: {message}", file=sys.stderr)
        return 2
    return status if isinstance(status, int) else 0


if __name__ == "__main__":
    sys.exit(main())
