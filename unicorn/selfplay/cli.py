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
             progress=not args.no_progress, workers=args.workers, backend="ray" if args.ray else "torchrun",
             settings=recipe_settings(args))


# flag -> (recipe section, field): the recipe's role settings a run may set from the command line
SETTING_FLAGS = {"height": ("solver", "height"), "width": ("solver", "width"),
                 "num_inference_steps": ("solver", "num_timesteps"), "judge_max_tokens": ("judge", "max_tokens"),
                 "proposer_max_tokens": ("proposer", "max_tokens")}


def recipe_settings(args) -> dict:
    """The given setting flags as {section: {field: value}} over the recipe's (unicorn.selfplay.recipe.load_recipe)."""
    out: dict = {}
    for flag, (section, name) in SETTING_FLAGS.items():
        value = getattr(args, flag)
        if value is not None:
            out.setdefault(section, {})[name] = value
    return out


def add_setting_flags(p) -> None:
    g = p.add_argument_group("recipe settings", "override the recipe's role settings for this run (kept in the run's "
                                                "recipe copy; a resumed run must give the same)")
    g.add_argument("--height", type=int, default=None, metavar="PX",
                   help="image height of a flow-matching model (BAGEL; default: the recipe's, else the model's)")
    g.add_argument("--width", type=int, default=None, metavar="PX", help="image width, as --height")
    g.add_argument("--num-inference-steps", type=int, default=None, metavar="N",
                   help="denoising timesteps of a flow-matching model (the recipe's solver.num_timesteps)")
    g.add_argument("--judge-max-tokens", type=int, default=None, metavar="N", help="the judge's reply limit")
    g.add_argument("--proposer-max-tokens", type=int, default=None, metavar="N", help="the proposer's reply limit")


def cmd_cpr(args) -> None:
    from unicorn.selfplay.run import rebuild_cpr

    rebuild_cpr(args.run_dir, args.out, recipe_name=args.recipe, selection=args.selection)


def cmd_improve(args) -> None:
    from unicorn.selfplay.evaluation import parse_options
    from unicorn.selfplay.improve import ImproveConfig, TrainSettings, improve
    from unicorn.toyworld.model import default_model_path

    toy = args.model is None
    model = args.model or str(default_model_path())
    recipe = args.recipe or ("toyworld" if toy else "unicorn-official")
    evaluator = args.evaluator if args.evaluator is not None else ("toyworld" if toy else "none")
    defaults = TrainSettings()
    preset = {}
    if args.train_preset:
        from unicorn.training.config import PRESETS

        preset = dict(PRESETS[args.train_preset])
    picked = {}
    for name in ("steps", "lr", "warmup", "micro_batch", "grad_accum", "seq_len", "ema", "cond_dropout"):
        flag = getattr(args, "train_" + name)
        picked[name] = flag if flag is not None else preset.get(name, getattr(defaults, name))
    if "betas" in preset:
        picked["betas"] = tuple(preset["betas"])
    if args.train_kind_weights:
        from unicorn.training.cli import _kind_weights

        picked["kind_weights"] = {k: v for k, v in _kind_weights(args.train_kind_weights).items() if v != 1.0}
    cfg = ImproveConfig(model=model, recipe=recipe, num_prompts=args.num_prompts, seed=args.seed,
                        epoch_size=args.epoch_size, train=TrainSettings(**picked),
                        evaluator=None if evaluator == "none" else evaluator,
                        eval_options=parse_options(args.eval_opt), control=args.control, device=args.device,
                        dtype=args.dtype, num_kv_blocks=args.num_kv_blocks, recipe_settings=recipe_settings(args))
    improve(cfg, args.rounds, args.out, progress=not args.no_progress, keep_engine=not args.fresh_engines)


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
    add_setting_flags(p)
    p.set_defaults(func=cmd_selfplay)
    p = sub.add_parser("cpr", help="rebuild the CPR data set of a self-play run (other thresholds or mix: --recipe)")
    p.add_argument("run_dir", help="a finished unicorn selfplay --out directory")
    p.add_argument("--out", required=True, help="where the CPR data set goes (images hard-linked or copied)")
    p.add_argument("--recipe", default=None, help="recipe name or directory (default: the run's own)")
    p.add_argument("--selection", default="judge", choices=["judge", "random"],
                   help="judge: the judge's best (and worst) rollouts; random: the control, seeded random rollouts "
                        "of the same kept prompts")
    p.set_defaults(func=cmd_cpr)
    p = sub.add_parser("improve", help="rounds of self-play -> CPR -> train -> export -> evaluate (resumable)",
                       description="Each round plays, builds CPR data, fine-tunes and exports from the previous "
                                   "round's export, then evaluates it with a plug-in evaluator; reports per round and "
                                   "overall (OUT/report.md, report.json, improve.png). See unicorn/selfplay/improve.py.")
    p.add_argument("--model", default=None, help="starting checkpoint (default: the embedded toy-world model)")
    p.add_argument("--rounds", type=int, required=True)
    p.add_argument("--out", required=True, help="run directory (an existing run is resumed if its config matches)")
    p.add_argument("--recipe", default=None, help="recipe name or directory (default as for unicorn selfplay)")
    p.add_argument("--num-prompts", type=int, default=256, help="self-play prompts per round")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--epoch-size", type=int, default=64)
    p.add_argument("--control", action="store_true",
                   help="also train and evaluate a control arm per round on random rollouts of the same prompts "
                        "instead of the judge's picks")
    p.add_argument("--evaluator", default=None,
                   help="toyworld | unicycle | module:attribute | an entry point of group unicorn.evaluators | none "
                        "(default: toyworld with the embedded model, none with --model)")
    p.add_argument("--eval-opt", action="append", default=[], metavar="KEY=VALUE",
                   help="an evaluator option, repeatable (e.g. prompts_per_category=40, seeds=[0,1,2], data=FILE)")
    p.add_argument("--train-preset", default=None, choices=["unicorn-official"],
                   help="the recipe's training settings (lr, warm-up, steps, grad-accum, EMA); flags override it")
    p.add_argument("--train-steps", type=int, default=None, help="optimizer steps per round (default 100)")
    p.add_argument("--train-lr", type=float, default=None, help="default 1e-4")
    p.add_argument("--train-warmup", type=int, default=None, help="default 10")
    p.add_argument("--train-micro-batch", type=int, default=None, help="default 4")
    p.add_argument("--train-grad-accum", type=int, default=None, help="default 1")
    p.add_argument("--train-seq-len", type=int, default=None,
                   help="packed row length in tokens (default: the model's context; the toy model's is 512)")
    p.add_argument("--train-ema", type=float, default=None, metavar="DECAY",
                   help="keep an EMA of the weights and export it (official 0.99)")
    p.add_argument("--train-cond-dropout", type=float, default=None, help="default 0.1")
    p.add_argument("--train-kind-weights", default=None, help='e.g. "t2i=0.1"')
    p.add_argument("--device", default="cpu")
    p.add_argument("--dtype", default="float32")
    p.add_argument("--num-kv-blocks", type=int, default=None)
    p.add_argument("--no-progress", action="store_true", help="no progress bars")
    p.add_argument("--fresh-engines", action="store_true",
                   help="open a fresh engine for every stage instead of keeping one (sleeping while training, the "
                        "export loaded in place); the same results")
    add_setting_flags(p)
    p.set_defaults(func=cmd_improve)
