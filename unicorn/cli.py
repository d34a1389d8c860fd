"""The `unicorn` command line. Errors print one line (no traceback) and exit with status 2."""
from __future__ import annotations

import argparse
import json
import os
import sys
import time
from pathlib import Path


def _engine(args):
    from unicorn.engine.llm_engine import Engine

    return Engine(args.model, device=args.device, dtype=args.dtype, num_kv_blocks=args.num_kv_blocks,
                  seed=args.seed)


def _default_model_dir() -> Path:
    """The embedded default checkpoint, written on first use (a tiny random Janus until the toy world ships)."""
    from unicorn.models.janus_tiny import write_random_janus_checkpoint

    cache = Path(os.environ.get("UNICORN_CACHE", Path.home() / ".cache" / "unicorn"))
    path = cache / "tiny-janus-random"
    if not (path / "config.json").exists():
        write_random_janus_checkpoint(path, preset="tiny", seed=0)
    return path


def cmd_demo(args) -> None:
    from unicorn.engine.params import ImageGenParams, SamplingParams

    if args.model is None:
        args.model = str(_default_model_dir())
    out_dir = Path(args.out)
    out_dir.mkdir(parents=True, exist_ok=True)
    engine = _engine(args)
    prompts = [
        "a red circle left of a blue square",
        "three green triangles on a white background",
        "the word CAT written in black",
        "a small yellow star above a large purple circle",
    ]
    start = time.perf_counter()
    images = engine.generate_images(prompts, ImageGenParams(n=args.n, cfg_scale=5.0, temperature=1.0, seed=args.seed),
                                    progress=True)
    image_time = time.perf_counter() - start
    records = []
    questions = []
    for p, output in zip(prompts, images):
        for i, image in enumerate(output.images):
            name = f"img_{output.request_id:03d}_{i}.png"
            image.save(out_dir / name)
            records.append({"prompt": p, "image": name, "seed": args.seed, "sample": i})
            questions.append({"messages": [{"role": "user", "content": [
                {"type": "image", "image": image},
                {"type": "text", "text": f"Does this image show: {p}? Reason, then give 'Score: N' from 0 to 10."},
            ]}]})
    start = time.perf_counter()
    judgements = engine.generate(questions, SamplingParams(max_tokens=24, temperature=0.0), progress=True)
    judge_time = time.perf_counter() - start
    for record, judgement in zip(records, judgements):
        record["judgement"] = judgement.text
    tmp = out_dir / "results.jsonl.tmp"
    tmp.write_text("".join(json.dumps(r) + "\n" for r in records))
    tmp.replace(out_dir / "results.jsonl")
    num_images = len(records)
    print(f"model: {args.model}")
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


def _common(p: argparse.ArgumentParser, model_required: bool = True) -> None:
    p.add_argument("--model", required=model_required, default=None, help="checkpoint directory")
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
    parser = argparse.ArgumentParser(
        prog="unicorn", description=__doc__,
        epilog="also: `unicorn train ...` (fine-tuning on CPR data), `unicorn toyworld ...` (the embedded world)")
    sub = parser.add_subparsers(dest="command", required=True)
    p = sub.add_parser("demo", help="draw and judge images with the embedded default model")
    _common(p, model_required=False)
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
    return parser


# Stages with their own command lines, dispatched before argparse sees their flags.
_DELEGATED = {
    "train": "unicorn.training.cli",
    "toyworld": "unicorn.toyworld.cli",
}


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else list(argv)
    if argv and argv[0] in _DELEGATED:
        import importlib

        return importlib.import_module(_DELEGATED[argv[0]]).main(argv[1:])
    args = build_parser().parse_args(argv)
    try:
        args.func(args)
    except (ValueError, FileNotFoundError, NotADirectoryError) as err:  # CheckpointError, RequestError, bad params
        message = str(err).splitlines()[0] if str(err) else type(err).__name__
        print(f"unicorn: error: {message}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main())
