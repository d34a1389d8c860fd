"""The shipped toy-world Janus: it loads in the Engine, draws, judges in the `Score: N` format while looking at the
image, its codec keeps what the oracle checks, and it measures as reported, above the floors it is checked against.
Floors are well under the measured values (bench/toyworld/README.md: judge Spearman 0.41, understanding 0.51,
generation 0.15, codec round trip 5.6 / 10)."""
import math

import numpy as np
import PIL.Image
import pytest

from unicorn.toyworld.model import default_model_path
from unicorn.toyworld.model.evaluate import EvalConfig, evaluate, judge_request, parse_score, spearman

MODEL = default_model_path()
VQ_ROUNDTRIP_FLOOR = 3.0  # mean oracle score of round-tripped clean renders; the cold-started codec scored ~0
pytestmark = pytest.mark.skipif(not (MODEL / "model.safetensors").exists(), reason="shipped checkpoint missing")


@pytest.fixture(scope="module")
def engine():
    from unicorn import Engine

    return Engine(str(MODEL), seed=0)


def test_parse_score_and_spearman():
    assert parse_score("colours right, shapes wrong.\nScore: 7") == 7
    assert parse_score("Score: 11") is None and parse_score("no score") is None
    assert math.isclose(spearman([1, 2, 3, 4], [10, 20, 30, 40]), 1.0)
    assert math.isclose(spearman([1, 2, 3, 4], [4, 3, 2, 1]), -1.0)


def test_pair_accuracy_counts_ordered_pairs_within_a_prompt():
    from unicorn.toyworld.model.evaluate import pair_accuracy

    row = lambda oracle, model: {"oracle": oracle, "model": model}  # noqa: E731
    right = [row(2, 1), row(8, 9), row(8, 3)]  # pairs (2,8) (2,8) ordered right, (8,8) skipped
    assert pair_accuracy([right]) == {"judge_pair_accuracy": 1.0, "judge_pairs": 2}
    mixed = [row(0, 5), row(4, 5), row(9, None)]  # a tie, an unparsed score, an unparsed score: all half
    wrong = [row(1, 7), row(6, 2)]
    assert pair_accuracy([mixed, wrong]) == {"judge_pair_accuracy": 1.5 / 4, "judge_pairs": 4}


def test_shipped_model_draws_and_judges(engine):
    from unicorn import ImageGenParams, SamplingParams

    out = engine.generate_images(["a large red circle on a white background."], ImageGenParams(n=2, cfg_scale=1.0, seed=0))
    images = out[0].images
    assert len(images) == 2 and images[0].size == (64, 64) and len(out[0].image_tokens[0]) == 64
    blank = PIL.Image.new("RGB", (64, 64), "white")
    texts = engine.generate([judge_request("a large red circle on a white background.", im) for im in images + [blank]],
                            SamplingParams(max_tokens=48, temperature=0.0))
    scores = [parse_score(t.text) for t in texts]
    assert all(s is not None for s in scores), [t.text for t in texts]


def test_shipped_judge_looks_at_the_image(engine):
    """Clean renders of held-out prompts score well above blank images for the same prompts (a judge that ignores
    the image, as undertrained runs did, gives both the same score)."""
    from unicorn import SamplingParams
    from unicorn.toyworld.model.data import make_item
    from unicorn.toyworld.scene import CATEGORIES

    items = [make_item(c, 0, 0, "val") for c in CATEGORIES]
    blank = PIL.Image.new("RGB", (64, 64), "white")
    requests = [judge_request(it.prompt, im) for it in items for im in (PIL.Image.fromarray(it.rgb), blank)]
    scores = [parse_score(o.text) for o in engine.generate(requests, SamplingParams(max_tokens=48, temperature=0.0))]
    clean, blanks = np.array(scores[0::2], dtype=float), np.array(scores[1::2], dtype=float)
    assert clean.mean() >= blanks.mean() + 2, (clean, blanks)  # measured: 9.3 vs 0.0


def test_shipped_vq_codec_keeps_what_the_oracle_checks(engine):
    """Drawing can only be as good as the codec's round trip: held-out clean renders, encoded and decoded, keep most of
    what the oracle checks (measured 5.6 / 10; an earlier codec gave back the same grey texture for every image: 0)."""
    from unicorn.toyworld.model.data import make_item
    from unicorn.toyworld.model.evaluate import codec_ceiling
    from unicorn.toyworld.scene import CATEGORIES

    items = [make_item(c, i, 0, "val") for c in CATEGORIES for i in range(3)]
    codec = codec_ceiling(engine.model.vqmodel, items)
    assert codec["mean_score"] >= VQ_ROUNDTRIP_FLOOR, codec


def test_eval_judge_tracks_oracle_ranks_its_own_drawings_and_beats_the_floors(engine):
    """Measured on this set: Spearman 0.52; pair accuracy 0.64 on 131 pairs, the judge's pick 2.19 vs a 1.63 mean
    drawing. The 4000-step checkpoint before it ranked its own drawings at chance (0.50) and picked below the mean.
    Understanding 0.50 against a blind answerer's 0.25, drawing accuracy 0.136 against a blank image's 0.074.
    Understanding and drawing are checked against their floors on the same questions and prompts (a blind answerer
    fitted on train questions; a blank image), not against each other: a blind answerer and a prompt-ignorant
    drawing also satisfy "drawing < understanding". The shipped model does not beat the harder drawing floors
    (another scene's render; README), which toyworld-v2 is to fix."""
    from unicorn.toyworld.model.data import make_item
    from unicorn.toyworld.model.evaluate import reference_question, variant_images
    from unicorn.toyworld.model.floors import BlindAnswerer, drawing_floors
    from unicorn.toyworld.questions import grade_answer
    from unicorn.toyworld.roles import question_text
    from unicorn.toyworld.scene import CATEGORIES

    cfg = EvalConfig(scenes_per_category=8, prompts_per_category=4)
    vq = engine.model.vqmodel
    report = evaluate(engine, cfg, vq=vq, log=lambda *a: None)
    assert report["judge"]["parse_rate"] >= 0.9
    assert report["judge"]["spearman"] > 0.25, report["judge"]
    generation = report["generation"]
    assert generation["judge_pair_accuracy"] > 0.55, generation
    assert generation["judge_pick_score"] > generation["mean_score"], generation

    def asked(items):  # (question text, reference read from the image) per question, as evaluate asks them
        return [(question_text(q), reference_question(q, report_.answers[q.id]))
                for item, _, _, report_ in variant_images(items, vq) for q in item.questions]

    blind = BlindAnswerer().fit(asked([make_item(c, i, 0, "train") for c in CATEGORIES for i in range(32)]))
    questions = asked([make_item(c, i, cfg.seed, cfg.split) for c in CATEGORIES for i in range(cfg.scenes_per_category)])
    blind_accuracy = float(np.mean([grade_answer(ref, blind.answer(text, ref)) for text, ref in questions]))
    assert len(questions) == report["understanding"]["n"]
    assert report["understanding"]["accuracy"] >= blind_accuracy + 0.15, (report["understanding"], blind_accuracy)
    prompts = [make_item(c, 10_000 + i, cfg.seed, cfg.split) for c in CATEGORIES for i in range(cfg.prompts_per_category)]
    blank = np.mean([r["soft"] for r in drawing_floors(prompts, vq)["blank"]])
    assert generation["oracle_accuracy"] >= blank + 0.03, (generation["oracle_accuracy"], blank)
