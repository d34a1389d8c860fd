"""``unicorn improve`` end to end on the embedded toy model with tiny settings: two rounds, each from the last one's
export, the reports' fields, a foreign --out refused, and a run interrupted between stages that resumes to the same
results without redoing finished stages. The control arm's data set: same records, other images."""
import json
from pathlib import Path

import pytest

from unicorn.selfplay.improve import ImproveConfig, TrainSettings, improve
from unicorn.selfplay.store import RunDirError
from unicorn.toyworld.model import default_model_path

EVAL = {"split": "val", "prompts_per_category": 1, "scenes_per_category": 1, "drawings": 2, "seeds": [0],
        "num_kv_blocks": 512}
QUIET = dict(log=lambda *_: None, progress=False)


def _cfg(**overrides) -> ImproveConfig:
    base = dict(model=str(default_model_path()), recipe="toyworld", num_prompts=4, epoch_size=2, seed=0,
                train=TrainSettings(steps=2, micro_batch=2, warmup=1, ema=0.5), evaluator="toyworld",
                eval_options=EVAL, num_kv_blocks=512)
    return ImproveConfig(**{**base, **overrides})


@pytest.fixture(scope="module")
def finished(tmp_path_factory):
    out = tmp_path_factory.mktemp("improve") / "run"
    report = improve(_cfg(), 2, str(out), **QUIET)
    return out, report


def test_rounds_chain_and_report(finished):
    out, report = finished
    assert (out / "round-00" / "eval" / "eval.json").is_file()
    for r in (1, 2):
        rd = out / f"round-{r:02d}"
        stages = json.loads((rd / "stages.json").read_text())
        assert set(stages) == {"selfplay", "cpr", "train", "export", "eval"}
        for sub in ("selfplay/run.json", "cpr/manifest.json", "train/metrics.jsonl", "model/config.json",
                    "eval/eval.json", "report.json", "report.md"):
            assert (rd / sub).is_file(), sub
        assert stages["train"]["steps"] == 2 and stages["export"]["weights"] == "ema"
    # round 2 plays, and trains from, round 1's export
    first_export = (out / "round-01" / "model").resolve()
    played = json.loads((out / "round-02" / "selfplay" / "run.json").read_text())["config"]
    assert played["model"] == str(first_export)
    assert played["model_digest"] == json.loads((out / "round-01" / "stages.json").read_text())["export"]["model_digest"]
    ckpt = sorted((out / "round-02" / "train" / "checkpoints").glob("step_*"))[-1]
    assert Path(json.loads((ckpt / "meta.json").read_text())["model_path"]).resolve() == first_export
    assert json.loads((out / "round-01" / "selfplay" / "run.json").read_text())["config"]["model"] == \
        str(default_model_path().resolve())
    # the export is a trained model, not a copy of its input
    assert (out / "round-01" / "model" / "model.safetensors").read_bytes() != \
        (default_model_path() / "model.safetensors").read_bytes()

    assert report == json.loads((out / "report.json").read_text())
    assert [r["round"] for r in report["rounds"]] == [1, 2]
    metrics = {"accuracy", "judge_pick_accuracy", "selection_gain", "mean_score", "understanding"}
    assert set(report["base"]["metrics"]) == metrics
    for r in report["rounds"]:
        assert set(r["eval"]["metrics"]) == metrics and r["weights"] == "ema"
        assert {"num_prompts", "num_kept", "acceptance_rate", "cpr_counts"} <= set(r["selfplay"])
        assert r["train"]["final_loss"] > 0
        for m in metrics:
            d = r["vs_base"][m]["overall"]
            assert {"delta", "se", "n"} <= set(d) and d["n"] >= 9
            assert abs(d["delta"] - (r["eval"]["metrics"][m] - report["base"]["metrics"][m])) < 1e-9
            assert set(r["vs_base"][m]["per_category"]) <= set(report["base"]["per_category"])
    assert report["rounds"][1]["vs_previous"]["accuracy"]["overall"]["n"] == 9
    md = (out / "report.md").read_text()
    assert "| 0 (start) |" in md and "| 2 |" in md
    pytest.importorskip("matplotlib")
    assert (out / "improve.png").read_bytes()[:4] == b"\x89PNG"


def _tree(root: Path) -> dict:
    """Every deterministic file (timing and the trainer's wall-clock metrics left out), paths made relative."""
    skip = ("timing.json", "metrics.jsonl")
    return {str(p.relative_to(root)): p.read_bytes().replace(str(root).encode(), b"OUT") for p in sorted(root.rglob("*"))
            if p.is_file() and p.name not in skip and "checkpoints" not in p.parts and p.suffix != ".png"}


def test_interrupted_between_stages_resumes_to_the_same_run(finished, tmp_path):
    """With a control arm, stopped after round 1's training (as if killed between stages), then re-run: only the
    unfinished stages run, and everything of round 0 and round 1's judge arm comes out as in the uninterrupted run
    without a control (round 1 depends neither on how many rounds follow nor on the control arm beside it)."""
    reference, _ = finished
    out = tmp_path / "run"
    assert improve(_cfg(control=True), 1, str(out), stop_after="1:train", **QUIET) is None
    assert set(json.loads((out / "round-01" / "stages.json").read_text())) == {"selfplay", "cpr", "train"}
    assert not (out / "round-01" / "model").exists()
    epoch = out / "round-01" / "selfplay" / "epochs" / "epoch-00000.json"
    written = epoch.stat().st_mtime_ns
    logged = []
    report = improve(_cfg(control=True), 1, str(out), log=logged.append, progress=False)
    assert epoch.stat().st_mtime_ns == written  # the finished self-play stage was not redone
    assert "improve: round 1: selfplay" not in logged and "improve: round 1: train" not in logged
    assert "improve: round 1: export" in logged and "improve: round 1: control/train" in logged
    judge_arm = ("round-00/", "round-01/selfplay/", "round-01/cpr/", "round-01/train/", "round-01/model/",
                 "round-01/eval/", "round-01/input.json")
    mine = {k: v for k, v in _tree(out).items() if k.startswith(judge_arm)}
    theirs = {k: v for k, v in _tree(reference).items() if k.startswith(judge_arm)}
    assert mine.keys() == theirs.keys()
    assert [k for k in mine if mine[k] != theirs[k]] == []

    control = report["rounds"][0]["control"]
    assert json.loads((out / "round-01" / "control" / "cpr" / "manifest.json").read_text())["config"]["selection"] == "random"
    assert control["cpr"]["cpr_counts"] == report["rounds"][0]["cpr"]["cpr_counts"]
    assert set(control["eval"]["metrics"]) == set(report["rounds"][0]["eval"]["metrics"])
    d = control["judge_vs_control"]["accuracy"]["overall"]
    assert abs(d["delta"] - (report["rounds"][0]["eval"]["metrics"]["accuracy"] - control["eval"]["metrics"]["accuracy"])) < 1e-9
    assert (out / "round-01" / "control" / "model" / "model.safetensors").read_bytes() != \
        (out / "round-01" / "model" / "model.safetensors").read_bytes()
    assert "## control" in (out / "round-01" / "report.md").read_text()


def test_foreign_out_is_refused(finished, tmp_path):
    out, _ = finished
    with pytest.raises(RunDirError, match="holds another improve run \\(its seed is 0, this one's 1\\)"):
        improve(_cfg(seed=1), 2, str(out), **QUIET)
    other = tmp_path / "other"
    other.mkdir()
    (other / "notes.txt").write_text("mine")
    from unicorn.cli import main

    assert main(["improve", "--rounds", "1", "--num-prompts", "4", "--out", str(other), "--no-progress"]) == 2
    assert sorted(p.name for p in other.iterdir()) == ["notes.txt"]


def test_control_data_set_has_the_same_records_with_other_images(finished, tmp_path):
    from unicorn.cpr.schema import read_records
    from unicorn.selfplay.run import rebuild_cpr

    out, _ = finished
    run = out / "round-01" / "selfplay"
    judge = {r.id: r for r in read_records(str(out / "round-01" / "cpr"))}
    summary = rebuild_cpr(str(run), str(tmp_path / "control"), selection="random", log=lambda *_: None)
    control = {r.id: r for r in read_records(str(tmp_path / "control"))}
    assert summary["selection"] == "random" and control.keys() == judge.keys()
    rollouts = [json.loads(line) for line in (run / "rollouts.jsonl").read_text().splitlines()]
    images = [(judge[i].image.path, control[i].image.path) for i in judge if judge[i].kind == "t2i"]
    assert images and all(any(r["image"] == c for r in rollouts) for _, c in images)
    for i, rec in control.items():  # judgements are the judge's transcripts either way
        if rec.kind == "judgement":
            assert rec == judge[i]
    again = rebuild_cpr(str(run), str(tmp_path / "control-again"), selection="random", log=lambda *_: None)
    assert again == summary
    # the same shards, byte for byte (the CPR store shards per kind: data-<kind>-00000.parquet ...)
    shards = json.loads((tmp_path / "control" / "manifest.json").read_text())["shards"]
    assert shards and shards == json.loads((tmp_path / "control-again" / "manifest.json").read_text())["shards"]
    for name in shards:
        assert (tmp_path / "control" / name).read_bytes() == (tmp_path / "control-again" / name).read_bytes(), name


def test_evaluators_are_plug_ins(tmp_path):
    from unicorn.selfplay.evaluation import EvaluatorError, load_evaluator, parse_options

    assert parse_options(["seeds=[0,1]", "split=val", "n=3"]) == {"seeds": [0, 1], "split": "val", "n": 3}
    with pytest.raises(EvaluatorError, match="expected key=value"):
        parse_options(["seeds"])
    with pytest.raises(EvaluatorError, match="unknown evaluator 'nope'"):
        load_evaluator("nope")
    with pytest.raises(EvaluatorError, match="has no 'Missing'"):
        load_evaluator("unicorn.toyworld.model.improve_eval:Missing")
    with pytest.raises(EvaluatorError, match="bad options"):
        load_evaluator("toyworld", {"no_such_option": 1})
    by_path = load_evaluator("unicorn.toyworld.model.improve_eval:ToyWorldEvaluator", {"split": "val"})
    assert by_path.describe() == load_evaluator("toyworld", {"split": "val"}).describe()

    unicycle = load_evaluator("unicycle", {"toyworld": 2, "num_kv_blocks": 256})
    result = unicycle.evaluate(str(default_model_path()), tmp_path / "unicycle", log=lambda *_: None)
    assert set(result["metrics"]) == {"soft", "hard"} and len(result["units"]["soft"]) == 2
    report = json.loads((tmp_path / "unicycle" / "report.json").read_text())
    assert result["metrics"]["soft"] == report["overall"]["soft"]
    assert abs(sum(result["units"]["soft"].values()) / 2 - result["metrics"]["soft"]) < 1e-3  # the report rounds
    # on unicorn improve's kept engine (used before, other seed): the same figures; another pool is declined
    from unicorn.engine.llm_engine import Engine

    with Engine(str(default_model_path()), seed=5, num_kv_blocks=256) as engine:
        engine.generate(["a red circle"])
        assert unicycle.evaluate_on(engine, str(default_model_path()), tmp_path / "kept", log=lambda *_: None) == result
    with Engine(str(default_model_path()), num_kv_blocks=128) as engine:
        assert unicycle.evaluate_on(engine, str(default_model_path()), tmp_path / "other", log=lambda *_: None) is None


def test_paired_delta_against_the_textbook_standard_error():
    import numpy as np

    from unicorn.selfplay.evaluation import compare, paired_delta

    rng = np.random.default_rng(1)
    a = {f"c{i % 3}/{i}": float(x) for i, x in enumerate(rng.random(400))}
    b = {u: v + 0.1 + 0.2 * float(rng.standard_normal()) for u, v in a.items()}
    d = paired_delta(a, b, samples=4000)
    diffs = np.array([b[u] - a[u] for u in a])
    assert abs(d["delta"] - diffs.mean()) < 1e-12 and d["n"] == 400
    assert abs(d["se"] / (diffs.std(ddof=1) / np.sqrt(400)) - 1) < 0.1
    assert paired_delta(a, {"other/1": 1.0}) is None
    per_cat = compare({"units": {"m": a}}, {"units": {"m": b}})["m"]["per_category"]
    assert set(per_cat) == {"c0", "c1", "c2"} and per_cat["c0"]["n"] == 134


@pytest.mark.optin
def test_a_real_round_against_the_control(tmp_path):
    """Minutes long (pytest --optin): one round at 64 prompts with the control arm, evaluated on 10 val prompts per
    category x 8 drawings; prints the paired deltas (no direction is asserted: the figures are what they are)."""
    cfg = _cfg(num_prompts=64, epoch_size=32, control=True, train=TrainSettings(steps=40),
               eval_options={"split": "val", "prompts_per_category": 10, "scenes_per_category": 4, "drawings": 8})
    report = improve(cfg, 1, str(tmp_path / "run"), **QUIET)
    r = report["rounds"][0]
    for name, comparison in (("vs base", r["vs_base"]), ("judge vs control", r["control"]["judge_vs_control"])):
        d = comparison["accuracy"]["overall"]
        assert d["n"] == 90 and d["se"] > 0
        print(f"{name}: drawing accuracy {d['delta']:+.4f} ± {d['se']:.4f}")
