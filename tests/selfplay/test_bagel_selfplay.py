"""``unicorn selfplay`` and ``unicorn improve`` end to end on a tiny random BAGEL checkpoint (official layout), through
the command line, at tiny settings given by flags (32 px, 3 denoising steps, short replies).

A random model writes garbage: its free-text judge replies never parse, so the first run keeps nothing and must say
so. The improve run uses a copy of ``unicorn-official`` whose judge is constrained to JSON and samples at temperature
1 (recipe data, no test hook): the random model's scores then parse (meaningless, but real engine outputs), prompts
are kept, and CPR, BAGEL training, export and a second round on the export all run."""
import hashlib
import json
import re
import shutil

import pytest
from PIL import Image

from unicorn.cli import main
from unicorn.cpr.shards import verify_dataset
from unicorn.models.bagel_tiny import write_random_bagel_checkpoint
from unicorn.selfplay.recipe import builtin_dir

RUN = ["--num-prompts", "4", "--epoch-size", "2", "--num-kv-blocks", "256", "--no-progress"]
SMALL = ["--height", "32", "--width", "32", "--judge-max-tokens", "24", "--proposer-max-tokens", "24"]
TINY = RUN + SMALL + ["--num-inference-steps", "3"]


@pytest.fixture(scope="module")
def tiny_bagel(tmp_path_factory) -> str:
    return write_random_bagel_checkpoint(str(tmp_path_factory.mktemp("bagel")), preset="tiny", seed=0)


def _rows(path):
    return [json.loads(line) for line in path.read_text().splitlines()]


def _check_rollouts(run, rows, size=32, steps=3):
    for r in rows:
        png = (run / r["image"]).read_bytes()
        assert hashlib.sha256(png).hexdigest() == r["image_sha256"]
        assert Image.open(run / r["image"]).size == (size, size)
        assert r["vq_codes"] is None  # a flow model has no codes
        assert (r["height"], r["width"], r["num_timesteps"], r["timestep_shift"]) == (size, size, steps, 3.0)
        assert "temperature" not in r  # VQ sampling settings do not apply
    for prompt_id in {r["prompt_id"] for r in rows}:
        mine = sorted((r for r in rows if r["prompt_id"] == prompt_id), key=lambda r: r["rollout"])
        assert [r["rollout"] for r in mine] == list(range(8))
        assert [round(r["cfg_scale"], 3) for r in mine] == [round(3 + 5 * i / 7, 3) for i in range(8)]


def test_selfplay_on_tiny_bagel_counts_unparsed_replies_and_finishes(tiny_bagel, tmp_path, capsys):
    out = tmp_path / "run"
    # the official recipe draws at 1024 px: refused up front in one line, and --out is left unused
    assert main(["selfplay", "--model", tiny_bagel, "--out", str(out), *RUN]) == 2
    err = capsys.readouterr().err.strip()
    assert "\n" not in err and "solver request" in err and "1024" in err and "--height" in err
    assert not out.exists()

    assert main(["selfplay", "--model", tiny_bagel, "--out", str(out), *TINY]) == 0
    summary = json.loads((out / "summary.json").read_text())
    rows = _rows(out / "rollouts.jsonl")
    assert summary["num_prompts"] >= 1 and summary["num_rollouts"] == len(rows) == 8 * summary["num_prompts"]
    # garbage text: every reply kept raw and counted, none scored, nothing kept, no CPR record
    assert summary["parse_failures"] == len(rows) and summary["score_histogram"] == {"unparsed": len(rows)}
    assert summary["num_kept"] == 0 and summary["judge_errors"] == 0
    assert all(r["score"] is None and isinstance(r["judge_raw"], str) and r["judge_raw"] for r in rows)
    _check_rollouts(out, rows)
    manifest = json.loads((out / "manifest.json").read_text())
    assert not any(manifest["counts"].values())
    verify_dataset(str(out))
    # the flags are kept in the run's recipe copy (unicorn cpr and a resume read it)
    kept = json.loads((out / "recipe" / "recipe.json").read_text())
    assert kept["solver"]["height"] == 32 and kept["solver"]["num_timesteps"] == 3 and kept["judge"]["max_tokens"] == 24
    assert "without a judge score" in capsys.readouterr().out

    # a re-run with other flags is another run: refused
    assert main(["selfplay", "--model", tiny_bagel, "--out", str(out), *RUN, *SMALL, "--num-inference-steps", "4"]) == 2
    assert "holds another self-play run (its recipe_digest" in capsys.readouterr().err


def _constrained_recipe(root):
    shutil.copytree(builtin_dir() / "unicorn-official", root)
    recipe = json.loads((root / "recipe.json").read_text())
    recipe["judge"].update(constrained=True, analysis_max_chars=8, temperature=1.0)
    recipe["caption_cap_per_category"] = None  # 4 prompt slots: the official cap would leave no caption
    recipe["mix"] = {"t2i": 1.0, "caption": 1.0, "judgement": 1.0, "reflection": 1.0}
    (root / "recipe.json").write_text(json.dumps(recipe, indent=2))
    return str(root)


def test_improve_on_tiny_bagel_trains_exports_and_round_two_plays_the_export(tiny_bagel, tmp_path, capsys):
    out = tmp_path / "improve"
    recipe = _constrained_recipe(tmp_path / "recipe")
    # room for the whole JSON reply (about 40 tokens of the tiny byte-level vocabulary); the last flag wins
    assert main(["improve", "--model", tiny_bagel, "--recipe", recipe, "--rounds", "2", "--out", str(out), *TINY,
                 "--judge-max-tokens", "48", "--train-steps", "2", "--train-micro-batch", "2",
                 "--evaluator", "none"]) == 0
    log = capsys.readouterr().out
    config = json.loads((out / "improve.json").read_text())["config"]
    assert config["train"]["seq_len"] == 2048  # the tiny model's context, not a fixed 512
    trained = [int(n) for n in re.findall(r"training single x1 on cpu: (\d+) records", log)]
    for index in (1, 2):
        rnd = out / f"round-{index:02d}"
        stages = json.loads((rnd / "stages.json").read_text())
        assert set(stages) == {"selfplay", "cpr", "train", "export"}  # evaluator none: nothing measured
        rows = _rows(rnd / "selfplay" / "rollouts.jsonl")
        _check_rollouts(rnd / "selfplay", rows)
        assert all(r["score"] is not None and json.loads(r["judge_raw"], strict=False)["score"] == r["score"]
                   for r in rows)  # the grammar lets raw control characters into the analysis
        assert stages["selfplay"]["num_kept"] >= 1 and stages["selfplay"]["parse_failures"] == 0
        counts = json.loads((rnd / "cpr" / "manifest.json").read_text())["counts"]
        assert counts == stages["cpr"]["cpr_counts"]
        assert min(counts["t2i"], counts["caption"], counts["judgement"]) >= 1
        verify_dataset(str(rnd / "cpr"))
        assert trained[index - 1] == sum(counts.values())  # every record fits a row: none skipped as too long
        assert {"ce", "mse"} <= set(stages["train"]["final_loss_per_term"])  # BAGEL's two losses
        metrics = _rows(rnd / "train" / "metrics.jsonl")
        assert len(metrics) == 2 and "mse/t2i" in metrics[-1]["loss_per_term"]
        model = rnd / "model"
        assert {"model.safetensors", "ae.safetensors", "llm_config.json", "vit_config.json"} <= {
            p.name for p in model.iterdir()}
        assert json.loads((rnd / "report.json").read_text())["round"] == index
    # round 2 played with round 1's export
    round2 = json.loads((out / "round-02" / "selfplay" / "run.json").read_text())["config"]
    assert round2["model"] == str((out / "round-01" / "model").resolve())
    assert json.loads((out / "round-02" / "input.json").read_text())["model"] == round2["model"]
    assert len(json.loads((out / "report.json").read_text())["rounds"]) == 2


def test_improve_on_tiny_bagel_with_nothing_kept_stops_in_one_line(tiny_bagel, tmp_path, capsys):
    # without the tiny settings: refused up front, and --out is left unused
    assert main(["improve", "--model", tiny_bagel, "--rounds", "1", "--out", str(tmp_path / "improve"), *RUN]) == 2
    assert "solver request" in capsys.readouterr().err and not (tmp_path / "improve").exists()
    assert main(["improve", "--model", tiny_bagel, "--rounds", "1", "--out", str(tmp_path / "improve"), *TINY,
                 "--train-steps", "1"]) == 2
    err = capsys.readouterr().err.strip()
    assert "\n" not in err and "CPR data set is empty" in err
    assert re.search(r"(\d+) of \1 judge replies had no score", err)
