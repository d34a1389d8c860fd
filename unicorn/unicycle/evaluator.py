"""UniCycle as an evaluator of ``unicorn improve`` (the interface of unicorn/selfplay/evaluation.py), for real models:
``--evaluator unicycle --eval-opt data=FILE.jsonl`` (our schema), ``tiif=DIR`` (TIIF-Bench's files) or ``toyworld=N``
(the toy world's test prompts), judged by ``judge=rule|model:PATH|openai:URL``. Metrics: soft and hard (0-100, as
the benchmark reports them), one unit per instance named ``category/id``."""
from __future__ import annotations

from dataclasses import asdict, dataclass


@dataclass(frozen=True)
class UniCycleEvaluator:
    data: str | None = None
    tiif: str | None = None
    tiif_split: str = "testmini"
    toyworld: int | None = None
    judge: str = "rule"
    judge_model: str = "gpt-4o"
    cfg_scale: float = 5.0
    temperature: float = 1.0
    seed: int = 0
    num_kv_blocks: int | None = None
    name = "unicycle"

    def __post_init__(self):
        if sum(x is not None for x in (self.data, self.tiif, self.toyworld)) != 1:
            raise ValueError("unicycle evaluator: give exactly one of data=FILE, tiif=DIR, toyworld=N")

    def describe(self) -> dict:
        return asdict(self)

    def _instances(self):
        from .schema import load_instances
        from .tiif import read_tiif
        from .toyworld_set import toyworld_instances

        if self.toyworld is not None:
            return toyworld_instances(int(self.toyworld), self.seed), f"toyworld-test-{self.toyworld}"
        if self.tiif is not None:
            return read_tiif(self.tiif, self.tiif_split), f"tiif-{self.tiif_split}"
        return load_instances(self.data), self.data

    def evaluate(self, model_path: str, out_dir, log=print) -> dict:
        from unicorn.engine.llm_engine import Engine

        with Engine(str(model_path), seed=self.seed, num_kv_blocks=self.num_kv_blocks) as engine:
            return self._evaluate(engine, model_path, out_dir, log)

    def evaluate_on(self, engine, model_path: str, out_dir, log=print) -> dict | None:
        """On ``unicorn improve``'s kept engine when it is the engine :meth:`evaluate` would open (CPU, fp32, the same
        KV blocks); None otherwise (the loop then calls :meth:`evaluate`)."""
        from unicorn.selfplay.evaluation import is_default_engine

        if not is_default_engine(engine, self.num_kv_blocks):
            return None
        engine.reseed(self.seed)  # as Engine(..., seed=self.seed) in evaluate
        engine.reset_prefix_cache()
        return self._evaluate(engine, model_path, out_dir, log)

    def _evaluate(self, engine, model_path: str, out_dir, log) -> dict:
        from .judges import make_judge
        from .runner import RunConfig, run

        instances, set_name = self._instances()
        judge = make_judge(self.judge, {"num_kv_blocks": self.num_kv_blocks}, self.judge_model)
        cfg = RunConfig(cfg_scale=self.cfg_scale, temperature=self.temperature, seed=self.seed)
        report = run(engine, instances, judge, out_dir, cfg, set_name, model=str(model_path), log=log)
        units = {"soft": {}, "hard": {}}
        for inst in report["instances"]:
            units["soft"][f"{inst['category']}/{inst['id']}"] = 100.0 * float(inst["soft"])
            units["hard"][f"{inst['category']}/{inst['id']}"] = 100.0 * float(inst["hard"])
        overall = report["overall"]
        return {"metrics": {"soft": float(overall["soft"]), "hard": float(overall["hard"])},
                "per_category": {c: {"soft": float(v["soft"]), "hard": float(v["hard"])}
                                 for c, v in report["categories"].items()},
                "units": units}
