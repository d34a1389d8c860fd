"""CPR records -> Janus token sequences -> packed fixed-length rows, as a deterministic, rank-aware, resumable stream.

One record becomes one *segment*: prompt tokens (no loss) then targets (text ids for caption/judgement/text, VQ
codes of the target image for t2i/reflection). Segments are packed first-fit into rows of ``seq_len`` tokens; each segment
keeps its own positions (0..n-1) and attends only to itself (block-diagonal causal mask built from ``segment``).

Every rank runs the same packer over the same shuffled record order (cheap: lengths only) and materialises only its
rows: global row ``i`` of a micro-step belongs to rank ``i % world_size``. So the global batch is the same for any
world size with the same ``world_size * micro_batch``, and the stream position is one small dict.
"""
from __future__ import annotations

import hashlib
import os
import random
from dataclasses import dataclass

import PIL.Image
import torch

from unicorn.cpr.schema import KINDS, CPRRecord, ImageRef, RecordError, read_records
from unicorn.models.janus_image import ImageProcessing, preprocess_images
from unicorn.models.spec import ModelSpec
from unicorn.training import formats

KIND_INDEX = {kind: i for i, kind in enumerate(KINDS)}
IGNORE = -100
# What feeds each position's input embedding.
TEXT, UND_IMAGE, GEN_CODE, PAD = 0, 1, 2, 3


@dataclass
class Sample:
    kind: int
    tokens: list[int]  # text id | image_token_id (understanding slot) | VQ code id, as ``source`` says
    source: list[int]
    text_labels: list[int]  # next-token target at each position, IGNORE where none
    image_labels: list[int]
    images: list[str]  # understanding images, in order of their slots

    def __len__(self) -> int:
        return len(self.tokens)


class VQCodeSource:
    """VQ codes of generation targets: the record's ``vq_codes`` when given, else the frozen VQ encoder (cached)."""

    def __init__(self, vqmodel, processing: ImageProcessing, spec: ModelSpec, device="cpu"):
        self.vqmodel = vqmodel.eval().requires_grad_(False) if vqmodel is not None else None
        self.processing = processing
        self.spec = spec
        self.device = torch.device(device)
        self.cache: dict[str, list[int]] = {}

    def check(self, ref: ImageRef, name: str) -> None:
        if ref.vq_codes is None:
            if self.vqmodel is None:
                raise RecordError(f"field {name + '.vq_codes'!r}: required (no VQ encoder available)")
            return
        n, vocab = self.spec.num_generated_image_tokens, self.spec.image_vocab_size
        if len(ref.vq_codes) != n:
            raise RecordError(f"field {name + '.vq_codes'!r}: has {len(ref.vq_codes)} codes, the model uses {n}")
        if max(ref.vq_codes) >= vocab:
            raise RecordError(f"field {name + '.vq_codes'!r}: code {max(ref.vq_codes)} >= image vocab {vocab}")

    @torch.no_grad()
    def __call__(self, ref: ImageRef, data_dir: str) -> list[int]:
        if ref.vq_codes is not None:
            return list(ref.vq_codes)
        path = os.path.join(data_dir, ref.path)
        if path not in self.cache:
            pixels = preprocess_images([load_image(path)], self.processing).to(self.device)
            self.cache[path] = self.vqmodel.encode(pixels)[0].tolist()
        return self.cache[path]


def load_image(path: str) -> PIL.Image.Image:
    with PIL.Image.open(path) as image:
        return image.convert("RGB")


class SampleEncoder:
    """Tokenizes records for one model (prompt formats in formats.py)."""

    def __init__(self, tokenizer, spec: ModelSpec, data_dir: str, codes: VQCodeSource):
        self.tokenizer = tokenizer
        self.spec = spec
        self.data_dir = data_dir
        self.codes = codes

    def _prompt_and_target(self, r: CPRRecord) -> tuple[str, str | None, list[ImageRef], ImageRef | None]:
        n = self.spec.num_image_tokens
        if r.kind == "caption":
            return formats.caption_prompt(n, r.instruction), r.prompt, [r.image], None
        if r.kind == "judgement":
            response = formats.judgement_response(r.reasoning, r.score)
            return formats.judgement_prompt(r.prompt, n, r.instruction), response, [r.image], None
        if r.kind == "text":
            return formats.text_prompt(r.instruction), r.response, [], None
        if r.kind == "t2i":
            return formats.t2i_prompt(r.prompt), None, [], r.image
        if r.kind == "reflection":
            return formats.reflection_prompt(r.prompt, n), None, [r.loser_image], r.winner_image
        raise RecordError(f"field 'kind': {r.kind!r} is not supported")

    def _token_ids(self, r: CPRRecord) -> tuple[list[int], list[int], list[ImageRef], ImageRef | None]:
        prompt, target, und_images, gen_image = self._prompt_and_target(r)
        prompt_ids = self.tokenizer.encode(prompt, add_bos=True)
        slots = sum(1 for t in prompt_ids if t == self.spec.image_token_id)
        if slots != self.spec.num_image_tokens * len(und_images):
            raise RecordError(f"field 'prompt': tokenizes to {slots} image slots, expected "
                              f"{self.spec.num_image_tokens * len(und_images)} (does the prompt contain image tags?)")
        target_ids = [] if target is None else self._reply_ids(target)
        return prompt_ids, target_ids, und_images, gen_image

    def _reply_ids(self, text: str) -> list[int]:
        """An assistant reply as trained: a leading space, then the end-of-sentence token."""
        return self.tokenizer.encode(" " + text.strip(), add_bos=False) + [self.spec.eos_token_id]

    def _followup_ids(self, r: CPRRecord) -> list[tuple[list[int], list[int]]]:
        """(question turn ids, answer ids) per follow-up turn of a caption record's conversation."""
        turns = getattr(r, "followups", None) or ()
        return [(self.tokenizer.encode(formats.followup_prompt(q), add_bos=False), self._reply_ids(a)) for q, a in turns]

    def length(self, r: CPRRecord) -> int:
        """Segment length without loading images; also checks the record's images exist."""
        prompt_ids, target_ids, und_images, gen_image = self._token_ids(r)
        for name, ref in r.images().items():
            if ref.path is not None and not os.path.exists(os.path.join(self.data_dir, ref.path)):
                if ref is gen_image and ref.vq_codes is not None:
                    continue
                raise RecordError(f"field {name + '.path'!r}: {os.path.join(self.data_dir, ref.path)} does not exist")
        if gen_image is not None:
            self.codes.check(gen_image, "image" if r.kind == "t2i" else "winner_image")
            return len(prompt_ids) + self.spec.num_generated_image_tokens
        return len(prompt_ids) + len(target_ids) + sum(len(q) + len(a) for q, a in self._followup_ids(r))

    def collate(self, rows: list[list[Sample]], seq_len: int) -> dict[str, torch.Tensor]:
        return collate(rows, seq_len, self.spec.pad_token_id, self.codes.processing)

    def encode(self, r: CPRRecord, drop_prompt: bool = False, key: str | None = None) -> Sample:
        """``drop_prompt``: train this t2i sample on the content-free prompt (classifier-free guidance's unconditional
        branch, exactly as the engine builds it). ``key`` (the sample's place in the stream) is unused: Janus
        samples draw nothing."""
        prompt_ids, target_ids, und_images, gen_image = self._token_ids(r)
        if drop_prompt:
            assert r.kind == "t2i", r.kind
            prompt_ids = self.spec.content_free(prompt_ids)
        image_id = self.spec.image_token_id
        tokens = list(prompt_ids)
        source = [UND_IMAGE if t == image_id else TEXT for t in prompt_ids]
        images = [os.path.join(self.data_dir, ref.path) for ref in und_images]
        if gen_image is not None:
            codes = self.codes(gen_image, self.data_dir)
            tokens += codes
            source += [GEN_CODE] * len(codes)
            text_labels = [IGNORE] * len(tokens)
            # the <begin_of_image> position predicts the first code; the last code predicts nothing
            image_labels = [IGNORE] * (len(prompt_ids) - 1) + codes + [IGNORE]
        else:
            # each position predicts the next token where that token is part of a reply; questions are context
            supervised = [False] * len(prompt_ids)
            for question_ids, reply_ids in [([], target_ids), *self._followup_ids(r)]:
                tokens += question_ids + reply_ids
                supervised += [False] * len(question_ids) + [True] * len(reply_ids)
            source += [TEXT] * (len(tokens) - len(source))
            text_labels = [t if s else IGNORE for t, s in zip(tokens[1:], supervised[1:])] + [IGNORE]
            image_labels = [IGNORE] * len(tokens)
        return Sample(KIND_INDEX[r.kind], tokens, source, text_labels, image_labels, images)


class Packer:
    """First-fit packing of record indices (by length) into rows, over an endless seeded shuffle of epochs."""

    def __init__(self, lengths: list[int], seq_len: int, seed: int, buffer_size: int = 64):
        assert lengths and max(lengths) <= seq_len, (len(lengths), seq_len)
        self.lengths = lengths
        self.seq_len = seq_len
        self.seed = seed
        self.buffer_size = buffer_size
        self.epoch, self.cursor, self.pending, self.rows_emitted = 0, 0, [], 0
        self._order = self._epoch_order(0)

    def _epoch_order(self, epoch: int) -> list[int]:
        order = list(range(len(self.lengths)))
        random.Random(f"{self.seed}/{epoch}").shuffle(order)
        return order

    def _refill(self) -> None:
        while len(self.pending) < self.buffer_size:
            if self.cursor == len(self._order):
                self.epoch, self.cursor = self.epoch + 1, 0
                self._order = self._epoch_order(self.epoch)
            self.pending.append(self._order[self.cursor])
            self.cursor += 1

    def next_row(self) -> list[int]:
        row, free, i = [], self.seq_len, 0
        self._refill()
        while i < len(self.pending):
            if self.lengths[self.pending[i]] <= free:
                index = self.pending.pop(i)
                row.append(index)
                free -= self.lengths[index]
                self._refill()
            else:
                i += 1
        self.rows_emitted += 1
        return row

    def state_dict(self) -> dict:
        return {"epoch": self.epoch, "cursor": self.cursor, "pending": list(self.pending), "rows_emitted": self.rows_emitted}

    def load_state_dict(self, state: dict) -> None:
        self.epoch, self.cursor = state["epoch"], state["cursor"]
        self.pending, self.rows_emitted = list(state["pending"]), state["rows_emitted"]
        self._order = self._epoch_order(self.epoch)


@dataclass(frozen=True)
class DataConfig:
    data_dir: str
    seq_len: int = 2048
    micro_batch: int = 1
    seed: int = 0
    on_bad_record: str = "stop"  # stop | skip
    buffer_size: int = 64
    cond_dropout: float = 0.0  # chance that a t2i sample is trained on the content-free prompt (for CFG)

    def __post_init__(self):
        if not 0.0 <= self.cond_dropout < 1.0:
            raise ValueError(f"--cond-dropout must be in [0, 1), got {self.cond_dropout}")
        if self.on_bad_record not in ("stop", "skip"):
            raise ValueError(f"--on-bad-record must be 'stop' or 'skip', got {self.on_bad_record!r}")
        if self.seq_len < 8 or self.micro_batch < 1:
            raise ValueError(f"seq_len {self.seq_len} and micro_batch {self.micro_batch} must be >= 8 and >= 1")

    def build(self, encoder: SampleEncoder, processing: ImageProcessing, rank: int = 0, world_size: int = 1,
              warn=print) -> "PackedDataset":
        return PackedDataset(self, encoder, processing, rank, world_size, warn)


class PackedDataset:
    """The rank's stream of micro-batches (dicts of tensors, see ``collate``); ``state_dict`` is its position."""

    def __init__(self, cfg: DataConfig, encoder: SampleEncoder, processing: ImageProcessing, rank: int, world_size: int,
                 warn=print):
        self.cfg, self.encoder, self.processing = cfg, encoder, processing
        self.rank, self.world_size = rank, world_size
        self.records: list[CPRRecord] = []
        lengths: list[int] = []
        num_too_long = 0
        for record, where in read_records(cfg.data_dir, cfg.on_bad_record, warn if rank == 0 else _quiet, True):
            try:
                length = encoder.length(record)
            except RecordError as e:
                if cfg.on_bad_record == "stop":
                    raise RecordError(f"{where}: bad record: {e} (use --on-bad-record skip to skip such lines)") from None
                if rank == 0:
                    warn(f"warning: skipped {where}: bad record: {e}")
                continue
            if length > cfg.seq_len:
                num_too_long += 1
                continue
            self.records.append(record)
            lengths.append(length)
        if num_too_long and rank == 0:
            warn(f"warning: skipped {num_too_long} record(s) longer than --seq-len {cfg.seq_len}")
        if not self.records:
            raise RecordError(f"{cfg.data_dir}: no usable records")
        self.lengths = lengths
        self.counts = {k: sum(1 for r in self.records if r.kind == k) for k in KINDS}
        self.fingerprint = hashlib.sha256("\n".join(f"{r.id}:{n}" for r, n in zip(self.records, lengths)).encode()).hexdigest()[:16]
        self.packer = Packer(lengths, cfg.seq_len, cfg.seed, cfg.buffer_size)

    @property
    def padding_fraction_estimate(self) -> float:
        return 1.0 - sum(self.lengths) / (len(self.lengths) * self.cfg.seq_len)

    def next_batch(self) -> dict[str, torch.Tensor]:
        rows = [(self.packer.next_row(), self.packer.rows_emitted - 1)  # (record indices, global row index)
                for _ in range(self.cfg.micro_batch * self.world_size)]
        mine = rows[self.rank :: self.world_size]
        return self.encoder.collate([[self.encoder.encode(self.records[i], self._drops_prompt(i, row_index, slot),
                                                          key=f"{self.cfg.seed}:{row_index}:{slot}")
                                      for slot, i in enumerate(row)] for row, row_index in mine], self.cfg.seq_len)

    def _drops_prompt(self, record: int, row_index: int, slot: int) -> bool:
        """A coin per (seed, global row, slot): the same on every rank and after a resume, fresh in every epoch."""
        if self.cfg.cond_dropout == 0.0 or self.records[record].kind != "t2i":
            return False
        digest = hashlib.sha256(f"cond-dropout:{self.cfg.seed}:{row_index}:{slot}".encode()).digest()
        return int.from_bytes(digest[:8], "little") / 2**64 < self.cfg.cond_dropout

    def state_dict(self) -> dict:
        return {"packer": self.packer.state_dict(), "fingerprint": self.fingerprint, "seed": self.cfg.seed}

    def load_state_dict(self, state: dict) -> None:
        if state["fingerprint"] != self.fingerprint or state["seed"] != self.cfg.seed:
            raise RecordError(
                f"the checkpoint's data position belongs to another data set or seed (fingerprint {state['fingerprint']}, "
                f"seed {state['seed']}; now {self.fingerprint}, seed {self.cfg.seed}); resume with the same --data and --seed"
            )
        self.packer.load_state_dict(state["packer"])


def _quiet(*_args) -> None:
    pass


def collate(rows: list[list[Sample]], seq_len: int, pad_id: int, processing: ImageProcessing) -> dict[str, torch.Tensor]:
    """Rows of segments -> [B, L] tensors; pixel_values [N, 3, S, S] for the understanding slots in row-major order."""
    b = len(rows)
    out = {
        "input_ids": torch.full((b, seq_len), pad_id, dtype=torch.long),  # text ids and VQ codes, per ``source``
        "source": torch.full((b, seq_len), PAD, dtype=torch.long),
        "positions": torch.zeros(b, seq_len, dtype=torch.long),
        "segment": torch.zeros(b, seq_len, dtype=torch.long),  # 0 = padding
        "text_labels": torch.full((b, seq_len), IGNORE, dtype=torch.long),
        "image_labels": torch.full((b, seq_len), IGNORE, dtype=torch.long),
        "label_kind": torch.full((b, seq_len), -1, dtype=torch.long),
    }
    images: list[str] = []
    for r, segments in enumerate(rows):
        start = 0
        for s, sample in enumerate(segments, 1):
            end = start + len(sample)
            span = slice(start, end)
            out["input_ids"][r, span] = torch.tensor(sample.tokens)
            out["source"][r, span] = torch.tensor(sample.source)
            out["positions"][r, span] = torch.arange(len(sample))
            out["segment"][r, span] = s
            out["text_labels"][r, span] = torch.tensor(sample.text_labels)
            out["image_labels"][r, span] = torch.tensor(sample.image_labels)
            out["label_kind"][r, span] = sample.kind
            images += sample.images
            start = end
    size = processing.image_size
    out["pixel_values"] = (
        preprocess_images([load_image(p) for p in images], processing) if images else torch.zeros(0, 3, size, size)
    )
    return out


def kind_token_counts(batch: dict[str, torch.Tensor]) -> torch.Tensor:
    """Target tokens per kind in a batch: [len(KINDS)] float64."""
    has_target = (batch["text_labels"] != IGNORE) | (batch["image_labels"] != IGNORE)
    kinds = batch["label_kind"][has_target]
    return torch.bincount(kinds, minlength=len(KINDS)).double()
