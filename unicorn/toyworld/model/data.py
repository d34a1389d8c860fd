"""Oracle-labelled pretraining data for the toy-world Janus, written as a CPR data set (unicorn/cpr/schema.py).

Per scene (all deterministic from ``"{seed}:{split}:{category}:{index}"``; pretraining uses split ``train``, the
evaluation ``val`` or ``test``, whose prompt combinations no train scene contains: toyworld/splits.py):
    caption     clean render -> its prompt                                   (kind caption, default instruction)
    questions   an image -> the oracle's answers to up to 8 UniCycle questions, one conversation per image
                (kind caption: the first question as instruction, the rest as followups, every answer supervised)
    judgement   prompt + an image -> rubric reasoning + ``Score: N``          (kind judgement, oracle report)
    proposing   "propose a prompt in category X" -> prompt                     (kind text: no image)
    rating      "rate this prompt for category X" -> valid? follows the rule? constraints, ``Score: N`` (kind text;
                the scene's own prompt, another category's, or a garbled one the world cannot draw: labels by
                construction, constraints = the number of the scene's questions)
    reflection  a wrong, degraded or mixed image of the scene -> VQ codes of its clean render (kind reflection: the
                edit a loser -> winner sample asks for)
    t2i         prompt -> VQ codes of the render (a quarter degraded); the trainer drops some prompts for CFG

Judged and questioned images are varied so that answers depend on the pixels: the clean render, generator-like
degradations, deliberately wrong scenes (``corrupt.mutate``), another scene's render, VQ round trips (which look like
the model's own drawings), mixed codes (the render's codes with a block from a wrong or other scene's codes and some
codes scattered from elsewhere in the image, decoded: what a half-right drawing looks like, scored by the oracle) and
blanks.
"""
from __future__ import annotations

import hashlib
import os
import random
from dataclasses import asdict, dataclass

import numpy as np
import torch
from PIL import Image

from unicorn.cpr.schema import (
    CaptionRecord, ImageRef, JudgementRecord, ReflectionRecord, T2IRecord, TextRecord, write_dataset,
)
from unicorn.toyworld import corrupt
from unicorn.toyworld.oracle import OracleReport, judge
from unicorn.toyworld.prompts import NUMBER_WORDS, make_prompt, sentence
from unicorn.toyworld.questions import Question, make_questions
from unicorn.toyworld.render import render_array
from unicorn.toyworld.roles import (
    propose_instruction, question_text, rate_instruction, rate_response, rating_vocabulary, reasoning_vocabulary,
    rubric_reasoning,
)
from unicorn.toyworld.sampler import sample_scene
from unicorn.toyworld.scene import CATEGORIES, PLAIN_BACKGROUNDS, Scene

VARIANTS = ("clean", "degraded", "wrong", "wrong_degraded", "other", "vq", "vq_wrong", "blank", "vq_mixed")
# reflection sources: a visibly worse drawing
LOSER_VARIANTS = ("wrong", "wrong_degraded", "vq_wrong", "degraded", "vq_mixed")
VARIANT_WEIGHTS = (2, 2, 4, 2, 2, 2, 2, 1, 6)


@dataclass(frozen=True)
class WorldDataConfig:
    scenes_per_category: int = 250
    judged_per_scene: int = 3
    questions_per_image: int = 8  # per judged image, asked in one conversation (the image's tokens are shared)
    t2i_fraction: float = 0.6  # of scenes that also give a text-to-image record
    t2i_degraded_fraction: float = 0.25  # of t2i targets drawn from a degraded render (noisier drawing data)
    propose_fraction: float = 0.3
    rate_fraction: float = 0.3  # of scenes that also give a prompt-rating record
    reflection_fraction: float = 0.2  # of scenes with a wrong or degraded judged image that give a reflection record
    image_size: int = 64
    seed: int = 0


def judge_reasoning(report: OracleReport) -> str:
    """The oracle's report in the judge's words (roles.rubric_reasoning), the target before ``Score: N``."""
    return rubric_reasoning(report.category, report.points)


def judgement_record(rid: str, item: "Item", image: ImageRef, report: OracleReport, seed: int,
                     provenance: dict) -> JudgementRecord:
    """prompt + image -> the oracle's rubric reasoning and ``Score: N``."""
    return JudgementRecord(id=rid, category=item.category, prompt=item.prompt, image=image, seed=seed,
                           reasoning=judge_reasoning(report), score=report.score, provenance=provenance)


def question_record(rid: str, item: "Item", questions: list[Question], image: ImageRef, report: OracleReport,
                    seed: int, provenance: dict) -> CaptionRecord:
    """image + some of the scene's questions, asked in turn in one conversation -> what the oracle reads in this image
    ("none" when it reads nothing)."""
    first, rest = questions[0], questions[1:]
    followups = tuple((question_text(q), report.answers[q.id] or "none") for q in rest) or None
    extra = {"followups": [q.to_dict() for q in rest]} if rest else {}
    return CaptionRecord(id=rid, category=item.category, prompt=report.answers[first.id] or "none", image=image,
                         instruction=question_text(first), followups=followups, seed=seed,
                         provenance={**provenance, "question": first.to_dict(), **extra})


@dataclass
class Item:
    """One scene with its prompt, questions and clean render."""
    key: str
    category: str
    split: str
    scene: Scene
    prompt: str
    questions: list[Question]
    rgb: np.ndarray


def make_item(category: str, index: int, seed: int, split: str, size: int = 64) -> Item:
    """Scene ``index`` of a category in one split (train | val | test)."""
    key = f"{seed}:{split}:{category}:{index}"
    rng = random.Random(key)
    scene = sample_scene(category, rng, split)
    prompt = make_prompt(scene, rng)
    return Item(key, category, split, scene, prompt, make_questions(scene, rng), render_array(scene, size))


def vq_roundtrip(vq, rgbs: list[np.ndarray]) -> tuple[list[np.ndarray], list[list[int]]]:
    """uint8 [S, S, 3] images -> (the VQ's reconstructions as uint8, their codes)."""
    codes = vq_codes(vq, rgbs)
    return vq_decode(vq, codes), codes


def vq_codes(vq, rgbs: list[np.ndarray], batch_size: int = 64) -> list[list[int]]:
    """The codes of each image; identical images (many clean renders repeat across variants) are encoded once."""
    digests = [hashlib.blake2b(rgb.tobytes(), digest_size=16).digest() for rgb in rgbs]
    first = list({d: k for k, d in reversed(list(enumerate(digests)))}.values())
    unique = [rgbs[k] for k in first]
    with torch.no_grad():
        codes = [c for i in range(0, len(unique), batch_size) for c in vq.encode(
            torch.from_numpy(np.stack(unique[i : i + batch_size])).permute(0, 3, 1, 2).float().div(127.5).sub(1.0)).tolist()]
    by_digest = dict(zip((digests[k] for k in first), codes))
    return [by_digest[d] for d in digests]


def mixed_codes(clean: list[int], donor: list[int], rng: random.Random) -> list[int]:
    """A half-right drawing in code space: the clean render's codes with (mostly) a rectangle of a wrong or other
    scene's codes at the same place, and a few positions taking codes from elsewhere in the same image."""
    side = int(round(len(clean) ** 0.5))
    out = list(clean)
    if rng.random() < 0.8:
        h, w = rng.randint(side // 5, side * 2 // 3), rng.randint(side // 5, side * 2 // 3)
        top, left = rng.randint(0, side - h), rng.randint(0, side - w)
        for y in range(top, top + h):
            out[y * side + left: y * side + left + w] = donor[y * side + left: y * side + left + w]
    rate = rng.uniform(0.0, 0.15)
    for k in range(len(out)):
        if rng.random() < rate:
            out[k] = out[rng.randrange(len(out))]
    return out


def vq_decode(vq, codes: list[list[int]], batch_size: int = 64) -> list[np.ndarray]:
    """Codes -> the codec's images as uint8 [S, S, 3]."""
    out = []
    with torch.no_grad():
        for i in range(0, len(codes), batch_size):
            pixels = vq.decode(torch.tensor(codes[i : i + batch_size]))
            out += list(((pixels.clamp(-1, 1) + 1) * 127.5).round().to(torch.uint8).permute(0, 2, 3, 1).numpy())
    return out


def variant_image(item: Item, variant: str, rng: random.Random, nrng: np.random.Generator, size: int) -> np.ndarray:
    """The image of a variant; for the VQ variants, the image still to be sent through the VQ."""
    if variant == "clean" or variant == "vq":
        return item.rgb
    if variant == "degraded":
        return corrupt.degrade(item.rgb, nrng, strength=rng.uniform(0.5, 2.0))
    if variant == "vq_mixed":  # the donor scene whose codes are mixed into the render's (mixed_codes)
        variant = rng.choice(("vq_wrong", "other"))
    if variant in ("wrong", "wrong_degraded", "vq_wrong"):
        kinds = list(corrupt.KEY_MUTATIONS[item.category]) * 3 + ["colour", "shape", "count", "size"]
        for _ in range(8):
            try:
                wrong = render_array(corrupt.mutate(item.scene, rng.choice(kinds), rng), size)
                break
            except (ValueError, IndexError, AssertionError):
                continue
        else:
            wrong = corrupt.degrade(item.rgb, nrng, strength=2.5)
        if variant == "wrong_degraded":
            return corrupt.degrade(wrong, nrng, strength=rng.uniform(0.5, 1.5))
        return wrong
    if variant == "other":
        return render_array(sample_scene(item.category, rng, item.split), size)
    if variant == "blank":
        colour = Image.new("RGB", (1, 1), rng.choice(PLAIN_BACKGROUNDS)).getpixel((0, 0))
        return np.broadcast_to(np.array(colour, np.uint8), (size, size, 3)).copy()
    raise ValueError(variant)


def rating_record(rid: str, item: Item, rng: random.Random, seed: int) -> TextRecord:
    """A prompt to rate for the item's category, with labels known by construction: the scene's own prompt (valid,
    follows the rule), a prompt the world wrote for another category (valid, does not), or a garbled one the world
    cannot draw (its words shuffled, or a count beyond six)."""
    source = rng.choices(("own", "other", "garbled"), weights=(2, 1, 1))[0]
    prompt, valid, follows, constraints = item.prompt, True, True, len(item.questions)
    if source == "other":
        category = rng.choice([c for c in CATEGORIES if c != item.category])
        scene = sample_scene(category, rng, item.split)
        prompt, follows = make_prompt(scene, rng), False
        constraints = len(make_questions(scene, rng))
    elif source == "garbled":
        words = prompt.rstrip(".").split()
        numbers = [i for i, w in enumerate(words) if w.lower() in NUMBER_WORDS[1:7]]
        if numbers and rng.random() < 0.5:
            words[numbers[0]] = rng.choice(NUMBER_WORDS[7:])
        else:
            shuffled = words[:]
            while len(set(words)) > 1 and shuffled == words:
                rng.shuffle(shuffled)
            words = shuffled
        prompt, valid = sentence(" ".join(words).lower()), False
    return TextRecord(id=rid, category=item.category, prompt=prompt, instruction=rate_instruction(item.category, prompt),
                      response=rate_response(valid, follows, constraints), seed=seed,
                      provenance={"source": "toyworld", "key": item.key, "role": "rate_prompt", "rated": source})


class ImageWriter:
    def __init__(self, root: str):
        self.root = root
        os.makedirs(os.path.join(root, "images"), exist_ok=True)

    def __call__(self, name: str, rgb: np.ndarray) -> ImageRef:
        rel = f"images/{name}.png"
        Image.fromarray(rgb).save(os.path.join(self.root, rel))
        return ImageRef(path=rel)


def build_world_dataset(out_dir: str, vq, cfg: WorldDataConfig, split: str = "train", log=print) -> dict:
    """Writes the CPR data set to ``out_dir``; returns the manifest counts and the text corpus size."""
    write = ImageWriter(out_dir)
    records = []
    for category in CATEGORIES:
        scenes = []  # (index, item, rng, [(variant, rgb)], propose?, t2i target or None)
        for index in range(cfg.scenes_per_category):
            item = make_item(category, index, cfg.seed, split, cfg.image_size)
            rng = random.Random("data:" + item.key)
            nrng = np.random.default_rng(hash_key(item.key))
            variants = rng.choices(VARIANTS, weights=VARIANT_WEIGHTS, k=cfg.judged_per_scene)
            judged = [(v, variant_image(item, v, rng, nrng, cfg.image_size)) for v in variants]
            propose = rng.random() < cfg.propose_fraction
            target = None
            if rng.random() < cfg.t2i_fraction:
                degraded = rng.random() < cfg.t2i_degraded_fraction
                target = corrupt.degrade(item.rgb, nrng, strength=1.0) if degraded else item.rgb
            losers = [j for j, (v, _) in enumerate(judged) if v in LOSER_VARIANTS]
            loser = losers[0] if losers and rng.random() < cfg.reflection_fraction else None
            scenes.append((index, item, rng, judged, propose, target, loser))
        # the VQ runs once over the category: one encode of every distinct image (the vq variants' inputs, the t2i
        # targets, the reflection winners), one decode for the vq variants' round trips
        to_vq = [(i, j) for i, sc in enumerate(scenes) for j, (v, _) in enumerate(sc[3]) if v.startswith("vq")]
        with_t2i = [i for i, sc in enumerate(scenes) if sc[5] is not None]
        with_reflection = [i for i, sc in enumerate(scenes) if sc[6] is not None]
        mixed = [(i, j) for i, j in to_vq if scenes[i][3][j][0] == "vq_mixed"]
        encoded = vq_codes(vq, [scenes[i][3][j][1] for i, j in to_vq] + [scenes[i][5] for i in with_t2i]
                           + [scenes[i][1].rgb for i in with_reflection] + [scenes[i][1].rgb for i, _ in mixed])
        vq_input = dict(zip(to_vq, encoded[: len(to_vq)]))
        codes = dict(zip(with_t2i, encoded[len(to_vq):]))
        winner_codes = dict(zip(with_reflection, encoded[len(to_vq) + len(with_t2i):]))
        clean_codes = encoded[len(to_vq) + len(with_t2i) + len(with_reflection):]
        for (i, j), clean in zip(mixed, clean_codes):  # the vq input was the donor scene
            vq_input[(i, j)] = mixed_codes(clean, vq_input[(i, j)], random.Random(f"mix:{scenes[i][1].key}:{j}"))
        for (i, j), rgb in zip(to_vq, vq_decode(vq, [vq_input[k] for k in to_vq])):
            scenes[i][3][j] = (scenes[i][3][j][0], rgb)

        for i, (index, item, rng, judged, propose, target, loser) in enumerate(scenes):
            rid = f"{category}-{index:05d}"
            clean = write(f"{rid}-clean", item.rgb)
            records.append(CaptionRecord(id=f"{rid}-cap", category=category, prompt=item.prompt, image=clean,
                                         seed=cfg.seed, provenance={"source": "toyworld", "key": item.key}))
            refs, scores = [], []
            for j, (variant, rgb) in enumerate(judged):
                ref = clean if variant == "clean" else write(f"{rid}-{j}-{variant}", rgb)
                report = judge(item.scene, rgb, item.questions)
                refs.append(ref)
                scores.append(report.score)
                provenance = {"source": "toyworld", "key": item.key, "variant": variant}
                records.append(judgement_record(f"{rid}-jud{j}", item, ref, report, cfg.seed,
                                                {**provenance, "oracle": report.raw_score}))
                asked = rng.sample(item.questions, min(cfg.questions_per_image, len(item.questions)))
                if asked:
                    records.append(question_record(f"{rid}-q{j}", item, asked, ref, report, cfg.seed, provenance))
            if propose:
                records.append(TextRecord(
                    id=f"{rid}-prop", category=category, prompt=item.prompt, instruction=propose_instruction(category),
                    response=item.prompt, seed=cfg.seed, provenance={"source": "toyworld", "key": item.key, "role": "proposer"}))
            if rng.random() < cfg.rate_fraction:
                records.append(rating_record(f"{rid}-rate", item, rng, cfg.seed))
            if loser is not None:
                winner_score = judge(item.scene, item.rgb, item.questions).score
                records.append(ReflectionRecord(
                    id=f"{rid}-refl", category=category, prompt=item.prompt, loser_image=refs[loser],
                    winner_image=ImageRef(vq_codes=tuple(winner_codes[i])), seed=cfg.seed,
                    loser_score=min(scores[loser], winner_score), winner_score=winner_score,
                    provenance={"source": "toyworld", "key": item.key, "loser_variant": judged[loser][0],
                                "loser_oracle_score": scores[loser]}))
            if target is not None:
                records.append(T2IRecord(id=f"{rid}-t2i", category=category, prompt=item.prompt, seed=cfg.seed,
                                         image=ImageRef(vq_codes=tuple(codes[i])),
                                         provenance={"source": "toyworld", "key": item.key}))
        log(f"data: {category} done ({len(records)} records)")
    manifest = write_dataset(out_dir, records, source_model="toyworld-oracle", seed=cfg.seed, config=asdict(cfg))
    return {"counts": manifest.counts, "num_records": manifest.num_records}


def hash_key(key: str) -> int:
    return int.from_bytes(hashlib.sha256(key.encode()).digest()[:8], "little")


def corpus_texts(cfg: WorldDataConfig, split: str = "train") -> list[str]:
    """The text the tokenizer is trained on: prompts, questions, answers, reasoning words, per scene."""
    texts = []
    for category in CATEGORIES:
        texts.append(propose_instruction(category))
        for index in range(cfg.scenes_per_category):
            item = make_item(category, index, cfg.seed, split, cfg.image_size)
            texts.append(item.prompt)
            texts += [question_text(q) + " " + q.answer for q in item.questions]
        texts.append(reasoning_vocabulary(category))
    texts.append(rating_vocabulary())
    return texts
