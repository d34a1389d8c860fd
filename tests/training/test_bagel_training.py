"""BAGEL training on the tiny fp32 checkpoint: the loss terms against a plain reference written from the official
trainer's facts (tests/models/bagel/bagel_reference.py does the model math from the checkpoint files), learning,
the frozen VAE, exact resume, export, and the CLI end to end."""
import json
import os
import sys

import pytest
import torch
import torch.nn.functional as F
from tokenizers import Tokenizer

from helpers import assert_histories_close, losses, make_config
from unicorn.cpr.schema import read_records
from unicorn.training import formats
from unicorn.training.trainer import Trainer

sys.path.insert(0, os.path.join(os.path.dirname(__file__), "..", "models", "bagel"))
from bagel_reference import Block, Context, ReferenceBagel  # noqa: E402

QUIET = dict(log=lambda *a: None)
SEQ = 256


def bagel_config(model, data, out, **overrides):
    return make_config(model, data, out, **{"seq_len": SEQ, **overrides})


@pytest.fixture(scope="module")
def trainer(tiny_bagel, cpr_data, tmp_path_factory):
    return Trainer(bagel_config(tiny_bagel, cpr_data, str(tmp_path_factory.mktemp("bagel-run")), steps=1), **QUIET)


# ---- the plain reference of the official training forward ------------------------------------------------------

def _ids(tok, text):
    return tok.encode(text, add_special_tokens=False).ids


def _reference_sums(ref: ReferenceBagel, tok: Tokenizer, record, sample) -> tuple[torch.Tensor, torch.Tensor]:
    """CE and MSE sums of one record, step by step as the official trainer packs and scores it: text segments
    <|im_start|> ids <|im_end|> (causal), images as one block at one rope position; the target block's latents at
    x_t = (1 - t) x0 + t noise, the velocity target noise - x0, per-token MSE over channels."""
    ctx = Context()
    ce_rows: list[tuple[int, list[int]]] = []  # (first position in the sequence, labels)
    target = None
    vit_images, vae_images = list(sample.vit_images), list(zip(sample.vae_images, sample.posterior_noise))

    def length():
        return sum(b.embeds.shape[0] for b in ctx.blocks)

    def text(s, loss=False):
        nonlocal ctx
        ids = _ids(tok, s)
        if loss:
            ce_rows.append((length(), ids + [ref.eos]))
        ctx = ref.update_text(ctx, ids)

    def vit():
        nonlocal ctx
        img = vit_images.pop(0)
        ctx = ref.update_image(ctx, img, vae=False, vit=True)

    def vae():
        nonlocal ctx
        img, post = vae_images.pop(0)
        ctx = ref.update_image(ctx, img, vae=True, vit=False, vae_noise=post)

    def noisy():
        nonlocal target
        img, post = vae_images.pop(0)
        x0 = ref.latent_tokens(ref.vae_encode(img, post))
        t, noise = sample.timesteps[-1], sample.noise[-1]
        assert 0 < float(t[0]) < 1 and torch.all(t == t[0])
        x_t = (1 - t[:, None]) * x0 + t[:, None] * noise
        n = x0.shape[0]
        embeds = torch.cat((ref.embed([ref.soi]), ref.latent_embeds(x_t, float(t[0]), *img.shape[1:]),
                            ref.embed([ref.eoi])))
        gen = torch.zeros(n + 2, dtype=torch.bool)
        gen[1:-1] = True
        ctx.blocks.append(Block(embeds, gen, torch.full((n + 2,), ctx.rope), False))
        target = (length() - n - 1, noise - x0)

    kind = record.kind
    if kind == "t2i":
        text(record.prompt)
        noisy()
    elif kind == "caption":
        vit()
        text(formats.CAPTION_INSTRUCTION)
        text(record.prompt, loss=True)
    elif kind == "judgement":
        vit()
        text(formats.JUDGE_INSTRUCTION.format(prompt=record.prompt))
        text(formats.judgement_response(record.reasoning, record.score), loss=True)
    elif kind == "text":
        text(record.instruction)
        text(record.response, loss=True)
    elif kind == "reflection":
        vae()
        vit()
        text(formats.REFLECTION_INSTRUCTION.format(prompt=record.prompt))
        noisy()
    hidden = ref.run(ctx.blocks)
    ce = torch.zeros(())
    for start, labels in ce_rows:
        logits = ref.lin(hidden[start:start + len(labels)], "language_model.lm_head", bias=False)
        ce = ce + F.cross_entropy(logits, torch.tensor(labels), reduction="sum")
    mse = torch.zeros(())
    if target is not None:
        start, want = target
        v = ref.lin(hidden[start:start + want.shape[0]], "llm2vae")
        mse = (v - want).pow(2).mean(-1).sum()
    return ce, mse


def test_loss_terms_equal_the_reference(trainer, tiny_bagel, cpr_data):
    records = {}
    for record, _ in read_records(cpr_data, "stop", print, True):
        records.setdefault(record.kind, record)
    encoder = trainer.data.encoder
    rows = [["t2i", "caption", "reflection"], ["judgement", "text"]]  # packed: segments must not see each other
    samples = [[encoder.encode(records[k], key=f"test:{r}:{i}") for i, k in enumerate(row)] for r, row in enumerate(rows)]
    batch = encoder.collate(samples, SEQ)
    with torch.no_grad():
        sums = trainer.backend.module(batch)
    ref = ReferenceBagel(tiny_bagel)
    tok = Tokenizer.from_file(os.path.join(tiny_bagel, "tokenizer.json"))
    from unicorn.cpr.schema import KINDS
    from unicorn.training.bagel_model import TERMS

    want = torch.zeros(len(TERMS))
    for row, row_samples in zip(rows, samples):
        for kind, sample in zip(row, row_samples):
            ce, mse = _reference_sums(ref, tok, records[kind], sample)
            want[:2] += torch.stack((ce, mse))
            want[TERMS.index(f"ce/{kind}")] += ce
            want[TERMS.index(f"mse/{kind}")] += mse
            if kind == "reflection":
                assert sample.vae_images[0].shape == (3, 32, 32) and sample.vit_images[0].shape == (3, 28, 28)
    torch.testing.assert_close(sums, want, rtol=1e-5, atol=1e-5)
    assert want[0] > 0 and want[1] > 0
    assert all(want[TERMS.index(f"ce/{k}")] > 0 for k in ("caption", "judgement", "text"))
    assert all(want[TERMS.index(f"mse/{k}")] > 0 for k in ("t2i", "reflection")) and len(KINDS) == 5


def test_dropout_and_rope_follow_the_official_packer(trainer, cpr_data):
    from unicorn.training.bagel_data import VAE_NOISY, VIT, BagelSampleEncoder, DropoutConfig

    (reflection,) = [r for r, _ in read_records(cpr_data, "stop", print, True) if r.kind == "reflection"][:1]
    enc = trainer.data.encoder
    kept = enc.encode(reflection, key="k")
    dropping = BagelSampleEncoder(enc.tokenizer, trainer.family.model_view, enc.vae, enc.data_dir,
                                  dropout=DropoutConfig(text=0.0, vit=0.999999, vae=0.0))
    dropped = dropping.encode(reflection, key="k")
    # kept: vae block (rope 0), vit block (rope 1), text from rope 2, the target block at the rope after the text
    n_text = len(kept) - (4 + 2) - (4 + 2) - (4 + 2)
    assert kept.positions[:6] == [0] * 6 and kept.positions[6:12] == [1] * 6
    assert kept.positions[12:12 + n_text] == list(range(2, 2 + n_text))
    assert kept.positions[-6:] == [2 + n_text] * 6
    # a dropped image leaves no tokens, but the rope still advances past it
    assert VIT not in dropped.source and len(dropped) == len(kept) - 6
    assert dropped.positions[6:6 + n_text] == list(range(2, 2 + n_text))
    assert dropped.source.count(VAE_NOISY) == 4
    torch.testing.assert_close(dropped.noise[-1], kept.noise[-1])  # the same draws for the same key


def test_training_learns_and_keeps_the_vae_frozen(tiny_bagel, cpr_data, tmp_path):
    trainer = Trainer(bagel_config(tiny_bagel, cpr_data, str(tmp_path / "run"), steps=10, micro_batch=2,
                                   optim={"lr": 2e-3, "warmup": 1}), **QUIET)
    vae = trainer.family.vae
    before = {k: v.clone() for k, v in vae.state_dict().items()}
    assert not any(name.startswith("bagel.vae.") for name, _ in trainer.backend.module.named_parameters())
    enc = trainer.data.encoder
    records = [r for r, _ in read_records(cpr_data, "stop", print, True)][:10]
    batch = enc.collate([[enc.encode(r, key=f"eval:{i}")] for i, r in enumerate(records)], SEQ)

    def evaluate():  # mean CE and MSE
        with torch.no_grad():
            return trainer.backend.module(batch)[:2] / enc_counts[:2]

    from unicorn.training.bagel_data import term_counts

    enc_counts = term_counts(batch).float()
    start = evaluate()
    trainer.train()
    end = evaluate()
    assert end[0] < 0.9 * start[0] and end[1] < start[1], (start, end)
    for k, v in vae.state_dict().items():
        assert torch.equal(v, before[k]), k
    assert all(p.grad is None and not p.requires_grad for p in vae.parameters())
    from unicorn.training.bagel_model import TERMS

    assert {"ce", "mse"} <= set(trainer.history[0]["loss_per_term"]) <= set(TERMS)
    assert trainer.history[0]["tokens_per_term"]["mse"] > 0
    assert trainer.history[0]["tokens_per_term"]["ce/t2i"] == 0  # t2i has no text target


def test_resume_is_exact(tiny_bagel, cpr_data, tmp_path):
    kw = dict(steps=5, ema_decay=0.9)
    full = Trainer(bagel_config(tiny_bagel, cpr_data, str(tmp_path / "full"), **kw), **QUIET)
    full.train()
    out = str(tmp_path / "killed")
    Trainer(bagel_config(tiny_bagel, cpr_data, out, save_every=2, stop_after=3, **kw), **QUIET).train()
    resumed = Trainer(bagel_config(tiny_bagel, cpr_data, out, save_every=2, resume=True, **kw), **QUIET)
    assert resumed.step == 2
    resumed.train()
    assert losses(resumed.history) == losses(full.history)[2:]
    want, got = full.ema.state_by_name(), resumed.ema.state_by_name()
    assert want.keys() == got.keys()
    for name, value in want.items():
        assert torch.equal(got[name], value), name


def test_ema_follows_the_weights(tiny_bagel, cpr_data, tmp_path):
    from unicorn.models import load_model

    export = str(tmp_path / "export")
    trainer = Trainer(bagel_config(tiny_bagel, cpr_data, str(tmp_path / "run"), steps=3, ema_decay=0.9,
                                   export_ema=True, export=export), **QUIET)
    module = trainer.backend.module
    want = {n: p.detach().clone() for n, p in module.named_parameters() if p.requires_grad}
    for _ in range(3):
        trainer.history.append(trainer.train_step())
        for n, p in module.named_parameters():
            if p.requires_grad:
                want[n] = 0.9 * want[n] + 0.1 * p.detach()
    ema = trainer.ema.state_by_name()
    assert want.keys() == ema.keys()
    for n, value in ema.items():
        torch.testing.assert_close(value, want[n], rtol=1e-6, atol=1e-7)
    trainer.export(export)  # --export-ema
    assert "ema.safetensors" in os.listdir(export) and "model.safetensors" in os.listdir(export)
    served = load_model(export).state_dict()  # the loader takes ema.safetensors first, as the official eval does
    for n, value in ema.items():
        assert torch.equal(served[n.removeprefix("bagel.")], value), n
    assert not torch.equal(served["language_model.lm_head.weight"], module.bagel.language_model.lm_head.weight)
    from safetensors.torch import load_file

    raw_file = load_file(os.path.join(export, "model.safetensors"))  # beside the EMA: the raw weights
    for n, p in module.named_parameters():
        if p.requires_grad:
            assert torch.equal(raw_file[n.removeprefix("bagel.")], p.detach()), n
    # without --export-ema the same run exports (and serves) the raw weights only
    raw = str(tmp_path / "raw")
    trainer.export(raw, ema=False)
    assert "ema.safetensors" not in os.listdir(raw)
    served = load_model(raw).state_dict()
    for n, p in module.named_parameters():
        if p.requires_grad:
            assert torch.equal(served[n.removeprefix("bagel.")], p.detach()), n


def test_export_is_the_official_layout_and_serves(tiny_bagel, cpr_data, tmp_path):
    from unicorn.engine.llm_engine import Engine
    from unicorn.engine.params import ImageGenParams, SamplingParams
    from unicorn.models import load_model
    from unicorn.models.bagel_infer import BagelInference

    export = str(tmp_path / "export")
    trainer = Trainer(bagel_config(tiny_bagel, cpr_data, str(tmp_path / "run"), steps=3, export=export), **QUIET)
    trainer.train()
    assert sorted(os.listdir(export)) == sorted(
        ["ae.safetensors", "config.json", "llm_config.json", "merges.txt", "model.safetensors", "tokenizer.json",
         "tokenizer_config.json", "vit_config.json", "vocab.json"])
    with open(os.path.join(export, "ae.safetensors"), "rb") as a, open(os.path.join(tiny_bagel, "ae.safetensors"), "rb") as b:
        assert a.read() == b.read()  # the frozen VAE, unchanged
    trained = trainer.full_model_state_dict()
    loaded = load_model(export)
    source = load_model(tiny_bagel)
    for name, value in loaded.state_dict().items():
        want = source.state_dict()[name] if name.startswith("vae.") else trained[name]
        assert torch.equal(value, want), name
    assert not torch.equal(loaded.language_model.lm_head.weight, source.language_model.lm_head.weight)

    tok = trainer.data.encoder.tokenizer
    prompt = "Describe the image in detail."
    inference = BagelInference(loaded)
    ctx = inference.new_context()
    inference.add_text([ctx], [tok.encode(prompt, add_bos=False)])
    want_tokens = inference.generate_text([ctx], 6)[0]
    with Engine(export, num_kv_blocks=64) as engine:
        (out,) = engine.generate([{"messages": [{"role": "user", "content": prompt}]}],
                                 SamplingParams(temperature=0.0, max_tokens=6))
        (image,) = engine.generate_images(["a red circle"], ImageGenParams(height=32, width=32, num_timesteps=3, seed=0))
    assert [t for t in out.token_ids if t != tok.token_to_id("<|im_end|>")] == want_tokens
    assert image.error is None and image.pixel_values.shape == (1, 3, 32, 32)


def test_cli_trains_bagel_end_to_end(tiny_bagel, tmp_path, capsys):
    from unicorn.cli import main
    from unicorn.training.synthetic import write_synthetic_cpr

    data = str(tmp_path / "data")
    manifest = write_synthetic_cpr(data, image_size=32, per_kind=3)
    assert set(manifest.counts.values()) == {3}
    out = str(tmp_path / "run")
    rc = main(["train", "--model", tiny_bagel, "--data", data, "--out", out, "--steps", "2", "--seq-len", str(SEQ),
               "--micro-batch", "2", "--lr", "1e-3", "--cond-dropout", "0.1", "--vit-cond-dropout", "0.3",
               "--vae-cond-dropout", "0.3", "--ema", "0.99", "--export-ema", "--adam-eps", "1e-15",
               "--export", str(tmp_path / "exp")])
    captured = capsys.readouterr()
    assert rc == 0, captured.err
    assert "step 2/2 | loss" in captured.out and "(ce " in captured.out and "summary:" in captured.out
    rows = [json.loads(line) for line in open(os.path.join(out, "metrics.jsonl"))]
    assert [r["step"] for r in rows] == [1, 2] and {"ce", "mse", "ce/caption", "mse/t2i"} <= set(rows[0]["loss_per_term"])
    assert "ce/caption" not in captured.out  # the progress line shows the two loss terms only
    assert os.path.exists(tmp_path / "exp" / "model.safetensors") and os.path.exists(tmp_path / "exp" / "ema.safetensors")
    # Janus' per-kind weights are refused in one line
    assert main(["train", "--model", tiny_bagel, "--data", data, "--out", str(tmp_path / "b"), "--steps", "1",
                 "--kind-weights", "t2i=2"]) == 2
    assert "--ce-weight" in capsys.readouterr().err


# ---- FSDP2 and ZeRO in 2 gloo processes give the single-process losses on the same global batch ----------------

RTOL = 1e-5  # fp32 on CPU: only the reduction order differs


@pytest.fixture(scope="module")
def single_bagel_run(tiny_bagel, cpr_data, tmp_path_factory):
    root = tmp_path_factory.mktemp("single")
    trainer = Trainer(bagel_config(tiny_bagel, cpr_data, str(root / "run"), steps=3, ema_decay=0.9,
                                   export_ema=True, export=str(root / "export")), **QUIET)
    trainer.train()
    return losses(trainer.history), str(root / "export")


def _close(a, b):
    assert_histories_close(a, b, RTOL)


def test_fsdp2_matches_single(single_bagel_run, tiny_bagel, cpr_data, tmp_path):
    from helpers import run_two_procs

    single, single_export = single_bagel_run
    two = run_two_procs(model=tiny_bagel, data=cpr_data, out=str(tmp_path / "run"), backend="fsdp2", micro_batch=1,
                        seq_len=SEQ, steps=3, ema_decay=0.9, export_ema=True,
                        export=str(tmp_path / "export"))
    _close(single, two)
    _same_export(str(tmp_path / "export"), single_export)


def _same_export(got_dir: str, want_dir: str) -> None:
    from safetensors.torch import load_file

    for file in ("model.safetensors", "ema.safetensors"):
        got, want = load_file(os.path.join(got_dir, file)), load_file(os.path.join(want_dir, file))
        assert got.keys() == want.keys()
        for k in want:  # AdamW turns reduction-order noise in near-zero gradients into ~1e-6 of the 1e-3 steps
            torch.testing.assert_close(got[k], want[k], rtol=1e-4, atol=1e-5)


@pytest.mark.optin  # 65-80 s each on 2 shared cores (DeepSpeed's start-up); FSDP2 above stays in the default suite
@pytest.mark.parametrize("stage", [2, 3])
def test_deepspeed_matches_single(stage, single_bagel_run, tiny_bagel, cpr_data, tmp_path):
    pytest.importorskip("deepspeed", reason="deepspeed is not installed (pip install deepspeed)")
    from helpers import run_two_procs

    ds = tmp_path / "ds.json"
    ds.write_text(json.dumps({"zero_optimization": {"stage": stage}, "gradient_clipping": 1.0}))
    two = run_two_procs(model=tiny_bagel, data=cpr_data, out=str(tmp_path / "run"), backend="deepspeed",
                        deepspeed_config=str(ds), micro_batch=1, seq_len=SEQ, steps=3, ema_decay=0.9,
                        export_ema=True, export=str(tmp_path / "export"))
    _close(single_bagel_run[0], two)
    _same_export(str(tmp_path / "export"), single_bagel_run[1])  # ZeRO-3: the EMA gathered from the partitions


def test_bad_bagel_records_are_one_line_errors(tiny_bagel, cpr_data, tmp_path, capsys):
    from unicorn.cpr.schema import ImageRef, ReflectionRecord, write_dataset
    from unicorn.training.cli import main

    data = str(tmp_path / "data")
    os.makedirs(os.path.join(data, "images"))
    for name in os.listdir(os.path.join(cpr_data, "images")):
        os.symlink(os.path.join(cpr_data, "images", name), os.path.join(data, "images", name))
    meta = dict(category="attribute", prompt="a red circle", seed=0)
    good = ReflectionRecord(id="ok", loser_image=ImageRef(path="images/blue_square.png"),
                            winner_image=ImageRef(path="images/red_circle.png"), loser_score=2, winner_score=9, **meta)
    codes_only = ReflectionRecord(id="codes", loser_image=ImageRef(path="images/blue_square.png"),
                                  winner_image=ImageRef(vq_codes=(1, 2, 3)), loser_score=2, winner_score=9, **meta)
    write_dataset(data, [good, codes_only], source_model="test")
    args = ["--model", tiny_bagel, "--data", data, "--out", str(tmp_path / "run"), "--steps", "1", "--seq-len", str(SEQ)]
    assert main(args) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith("error:") and len(err.splitlines()) == 1
    assert "data-00000.jsonl:2" in err and "'winner_image.path'" in err and "required for BAGEL" in err
    assert main(args + ["--on-bad-record", "skip"]) == 0


@pytest.mark.parametrize("normalization", ["step", "micro"])
def test_the_step_gradient_follows_the_normalization(normalization, tiny_bagel, cpr_data, tmp_path):
    """step: each term's sum over both micro-steps / its count over both; micro (the official trainer): each
    micro-step's sums / that micro-step's counts, the two averaged."""
    import copy

    from unicorn.training.bagel_data import term_counts

    kw = dict(steps=1, micro_batch=1, grad_accum=2, loss_normalization=normalization)
    trainer = Trainer(bagel_config(tiny_bagel, cpr_data, str(tmp_path / "a"), **kw), **QUIET)
    twin = Trainer(bagel_config(tiny_bagel, cpr_data, str(tmp_path / "b"), **kw), **QUIET)  # the same stream
    reference = copy.deepcopy(trainer.backend.module)
    grads = {}
    step = trainer.backend.step

    def capture(clip):
        grads.update({n: p.grad.clone() for n, p in trainer.backend.module.named_parameters() if p.grad is not None})
        return step(clip)

    trainer.backend.step = capture
    trainer.train_step()
    batches = [twin.data.next_batch() for _ in range(2)]
    sums = [reference(b) for b in batches]
    counts = [term_counts(b).float().clamp(min=1) for b in batches]  # a term absent from a micro-step adds 0
    w = trainer.weights  # ce 0.1, mse 1.0; the per-kind split 0
    assert w[:2].tolist() == pytest.approx([0.1, 1.0]) and not w[2:].any()
    if normalization == "step":
        loss = (w * (sums[0] + sums[1]) / sum(term_counts(b).float() for b in batches).clamp(min=1)).sum()
    else:
        loss = ((w * sums[0] / counts[0]).sum() + (w * sums[1] / counts[1]).sum()) / 2
    loss.backward()
    assert counts[0][1] != counts[1][1] or counts[0][0] != counts[1][0]  # the two normalizations differ here
    for n, p in reference.named_parameters():
        if p.grad is not None:
            torch.testing.assert_close(grads[n], p.grad, rtol=1e-5, atol=1e-7)
