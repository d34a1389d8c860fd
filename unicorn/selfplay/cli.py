"""The ``unicorn selfplay`` subcommand (its logic lives in unicorn.selfplay.run)."""
from __future__ import annotations


def cmd_selfplay(args) -> None:
    from unicorn.selfplay.driver import SelfPlayConfig
    from unicorn.selfplay.run import selfplay
    from unicorn.toyworld.model import default_model_path

    model = args.model or str(default_model_path())
    recipe = args.recipe or ("toyworld" if args.model is None else "unicorn-official")
    from unicorn.selfplay import workers

    cfg = SelfPlayConfig(num_prompts=args.num_prompts, seed=args.seed, epoch_size=args.epoch_size)
    if args.workers is not None and args.workers < 1:
        raise SystemExit(f"--workers must be >= 1, got {args.workers}")
    if args.ray and not workers.ray_available():
        raise SystemExit("--ray: Ray is not installed (pip install ray)")
    if not args.ray and args.workers is not None and args.workers > 1 and workers.env_world()[1] == 1:
        workers.relaunch_under_torchrun(args.workers)  # does not return
    selfplay(model, recipe, cfg, args.out, device=args.device, dtype=args.dtype, num_kv_blocks=args.num_kv_blocks,
             progress=not args.no_progress, workers=args.workers, backend="ray" if args.ray else "torchrun")


def cmd_cpr(args) -> None:
    from unicorn.selfplay.run import rebuild_cpr

    rebuild_cpr(args.run_dir, args.out, recipe_name=args.recipe)


def add_subparser(sub) -> None:
    p = sub.add_parser("selfplay", help="propose, draw, judge and build a CPR data set (resumable)")
    p.add_argument("--model", default=None, help="checkpoint directory (default: the embedded toy-world model)")
    p.add_argument("--recipe", default=None,
                   help="a shipped recipe name or a recipe directory (default: toyworld with the embedded model, "
                        "unicorn-official with --model)")
    p.add_argument("--num-prompts", type=int, required=True)
    p.add_argument("--out", required=True, help="run directory (an existing run is resumed if its config matches)")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--epoch-size", type=int, default=64, help="prompt slots per epoch (the unit of resume)")
    p.add_argument("--device", default="cpu")
    p.add_argument("--dtype", default="float32")
    p.add_argument("--num-kv-blocks", type=int, default=None)
    p.add_argument("--no-progress", action="store_true", help="no progress bars")
    p.add_argument("--workers", type=int, default=None,
                   help="processes, one engine each (started under torchrun; default: the torchrun world size, or 1); "
                        "the data set is the same as one worker's")
    p.add_argument("--ray", action="store_true", help="run the --workers as Ray actors (needs ray installed)")
    p.set_defaults(func=cmd_selfplay)
    p = sub.add_parser("cpr", help="rebuild the CPR data set of a self-play run (other thresholds or mix: --recipe)")
    p.add_argument("run_dir", help="a finished unicorn selfplay --out directory")
    p.add_argument("--out", required=True, help="where the CPR data set goes (images hard-linked or copied)")
    p.add_argument("--recipe", default=None, help="recipe name or directory (default: the run's own)")
    p.set_defaults(func=cmd_cpr)
