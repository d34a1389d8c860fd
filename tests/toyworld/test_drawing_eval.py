"""The drawing eval: CFG spread, the expected score from the score token's logprobs, and one end-to-end run of the
shipped model through the public engine API (figures are checked for what they must satisfy, not for values)."""
import math

import pytest

from unicorn.engine.logprobs import TokenLogprob
from unicorn.engine.outputs import TextSample
from unicorn.toyworld.model.drawing_eval import (DrawingEvalConfig, aggregate, cfg_spread, evaluate_drawing,
                                                 expected_score)


def test_cfg_spread():
    assert cfg_spread(3, 8, 8) == pytest.approx([3, 3 + 5 / 7, 3 + 10 / 7, 3 + 15 / 7, 3 + 20 / 7, 3 + 25 / 7,
                                                   3 + 30 / 7, 8], abs=1e-4)
    assert cfg_spread(2, 5, 1) == [2.0]


def test_expected_score_reads_the_score_tokens_distribution():
    vocab = {1: "Score", 2: ":", 3: " 7", 4: " 8", 5: " ok", 6: " 10"}
    decode = lambda ids: "".join(vocab[i] for i in ids)  # noqa: E731
    top = {3: math.log(0.5), 4: math.log(0.25), 5: math.log(0.2), 6: math.log(0.05)}
    sample = TextSample(text="Score: 7", token_ids=[1, 2, 3], finish_reason="stop", logprobs=[
        TokenLogprob(1, 0.0, {}), TokenLogprob(2, 0.0, {}), TokenLogprob(3, math.log(0.5), top)])
    assert expected_score(sample, decode) == pytest.approx((7 * 0.5 + 8 * 0.25 + 10 * 0.05) / 0.8)
    assert expected_score(TextSample(text="no", token_ids=[5], finish_reason="stop", logprobs=[TokenLogprob(5, 0.0, {})]), decode) is None


def test_aggregate_gives_mean_and_standard_error_per_number():
    out = aggregate([{"a": 1.0, "n": {"b": 2.0}, "name": "x"}, {"a": 3.0, "n": {"b": 2.0}, "name": "x"}])
    assert out["a"] == {"mean": 2.0, "se": 1.0} and out["n"]["b"] == {"mean": 2.0, "se": 0.0} and out["name"] == "x"


def test_the_shipped_model_end_to_end():
    from unicorn import Engine
    from unicorn.toyworld.model import default_model_path
    from unicorn.toyworld.model.data import make_item
    from unicorn.toyworld.scene import CATEGORIES

    engine = Engine(str(default_model_path()), num_kv_blocks=2048)
    items = [make_item(c, 0, 12, "val") for c in CATEGORIES]
    report = evaluate_drawing(engine, items, DrawingEvalConfig(drawings=4, seeds=(0, 1)), log=lambda *_: None)
    overall = report["overall"]
    assert report["config"]["cfg_scales"] == cfg_spread(3, 8, 4)
    assert overall["drawings"]["mean"] == 36 and len(report["per_category"]) == 9
    assert 0 <= overall["accuracy"]["mean"] <= 1 and overall["accuracy"]["se"] >= 0
    assert overall["judge"]["parse_rate"]["mean"] > 0.9  # the judge's reply format holds on its own drawings
    judge = report["per_seed"][0]["judge"]
    assert judge["pairs"] > 0 and 0 <= judge["tie_rate"] <= 1
    # The tie-break only splits ties: it can never add ties.
    assert report["per_seed"][0]["judge_tie_break"]["tie_rate"] <= judge["tie_rate"]
