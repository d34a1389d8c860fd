"""CPR training records (method.md §3), schema version 2: what self-play writes and ``unicorn train`` reads.

A data set is one directory:

    manifest.json          {"schema_version": 2, "num_records": N, "counts": {"t2i": .., ...},
                            "shards": ["data-00000.jsonl", ...], "source_model": "...", "seed": 0, "config": {...}}
    data-00000.jsonl       one record per line (JSON object), any mix of kinds
    images/...png          images, referenced by paths relative to the data set directory

Every record has ``id`` (unique), ``kind`` (t2i | caption | judgement | reflection | text), ``category`` (the
proposer's category, e.g. "counting"), ``prompt`` (the text-to-image prompt it derives from), ``seed`` (int or null)
and ``provenance`` (free dict: round, rollout index, sampling parameters, judge scores, ...). Per kind:

    t2i         prompt -> image                        image (ImageRef), score (int|null)
    caption     image -> prompt                        image, instruction (str|null: the question asked)
    judgement   prompt + image -> reasoning, Score: N  image, reasoning (str), score (int 0-10), instruction
    reflection  prompt + loser image -> winner image   loser_image, winner_image, loser_score, winner_score
    text        instruction -> response, no image      instruction (str), response (str): proposing a prompt,
                                                       rating a prompt, answering without an image

An ImageRef is ``{"path": "images/x.png", "vq_codes": [..] | null}``: a PNG path (needed wherever the image is an
understanding input: caption, judgement, reflection's loser) and/or the image's VQ code ids (enough for a
generation target: t2i image, reflection winner; Janus' solver has them already, so storing them skips the VQ
encode at training time). ``instruction`` null means the trainer's default wording (unicorn/training/formats.py).

On disk (version 2) every line has the same columns, ``COLUMNS``, in that order, null where a kind has no such
field, and ``provenance`` is a JSON object *encoded as a string*: shards of any mix of kinds then share one column
set (a columnar reader sees one schema). Version 1 (no ``text`` kind, only the kind's own fields, provenance as a
nested object) is still read; writers write version 2.
"""
from __future__ import annotations

import json
import os
import tempfile
from collections.abc import Iterable, Iterator
from dataclasses import asdict, dataclass, field, fields

SCHEMA_VERSION = 2
READABLE_VERSIONS = (1, 2)
KINDS = ("t2i", "caption", "judgement", "reflection", "text")  # new kinds go last: the trainer indexes losses by position
V1_KINDS = KINDS[:4]
MANIFEST = "manifest.json"


class RecordError(ValueError):
    """A record that does not follow the schema; the message names the field (and the file:line when read)."""


def _require(cond: bool, field_name: str, why: str) -> None:
    if not cond:
        raise RecordError(f"field {field_name!r}: {why}")


def _is_int(value) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


@dataclass(frozen=True)
class ImageRef:
    path: str | None = None  # relative to the data set directory
    vq_codes: tuple[int, ...] | None = None

    def validate(self, name: str, need_pixels: bool) -> None:
        _require(self.path is not None or self.vq_codes is not None, name, "needs 'path' or 'vq_codes'")
        if self.path is not None:
            _require(isinstance(self.path, str) and self.path != "", f"{name}.path", "must be a non-empty string")
            _require(not os.path.isabs(self.path), f"{name}.path", "must be relative to the data set directory")
        if need_pixels:
            _require(self.path is not None, f"{name}.path", "required: this image is an understanding input")
        if self.vq_codes is not None:
            _require(len(self.vq_codes) > 0 and all(_is_int(c) and c >= 0 for c in self.vq_codes),
                     f"{name}.vq_codes", "must be a non-empty list of non-negative ints")

    def to_dict(self) -> dict:
        return {"path": self.path, "vq_codes": None if self.vq_codes is None else list(self.vq_codes)}

    @classmethod
    def from_dict(cls, d, name: str) -> "ImageRef":
        _require(isinstance(d, dict), name, f"must be an object with 'path' and/or 'vq_codes', got {type(d).__name__}")
        unknown = set(d) - {"path", "vq_codes"}
        _require(not unknown, name, f"unknown keys {sorted(unknown)}")
        codes = d.get("vq_codes")
        _require(codes is None or isinstance(codes, list), f"{name}.vq_codes", "must be a list of ints or null")
        return cls(path=d.get("path"), vq_codes=None if codes is None else tuple(codes))


@dataclass(frozen=True)
class CPRRecord:
    id: str
    category: str
    prompt: str
    seed: int | None = None
    provenance: dict = field(default_factory=dict)

    kind = ""  # set per subclass
    _images = ()  # ((field, is an understanding input), ...)
    _required_extra = ()  # fields that default to None in the dataclass but are required by the schema

    def validate(self) -> "CPRRecord":
        _require(isinstance(self.id, str) and self.id != "", "id", "must be a non-empty string")
        _require(isinstance(self.category, str) and self.category != "", "category", "must be a non-empty string")
        _require(isinstance(self.prompt, str) and self.prompt.strip() != "", "prompt", "must be a non-empty string")
        _require(self.seed is None or _is_int(self.seed), "seed", "must be an int or null")
        _require(isinstance(self.provenance, dict), "provenance", "must be an object")
        for name, need_pixels in self._images:
            ref = getattr(self, name)
            _require(isinstance(ref, ImageRef), name, "must be an ImageRef")
            ref.validate(name, need_pixels)
        return self

    def images(self) -> dict[str, ImageRef]:
        return {name: getattr(self, name) for name, _ in self._images}

    def to_dict(self) -> dict:
        """The version-2 line: every column of COLUMNS, null where this kind has no such field, provenance as a
        JSON string."""
        out = dict.fromkeys(COLUMNS)
        out["kind"] = self.kind
        for f in fields(self):
            value = getattr(self, f.name)
            out[f.name] = value.to_dict() if isinstance(value, ImageRef) else value
        try:
            out["provenance"] = json.dumps(self.provenance, sort_keys=True, ensure_ascii=False)
        except (TypeError, ValueError) as e:
            raise RecordError(f"field 'provenance': not JSON-serialisable ({e})") from None
        return out

    @classmethod
    def from_dict(cls, d: dict) -> "CPRRecord":
        """From a record's own fields (provenance a dict): the in-memory form both versions decode to."""
        for name in cls._required_extra:
            _require(d.get(name) is not None, name, f"missing (required for kind {cls.kind!r})")
        names = {f.name for f in fields(cls)}
        unknown = set(d) - names - {"kind"}
        _require(not unknown, sorted(unknown)[0] if unknown else "", f"unknown field for kind {cls.kind!r}")
        for name in sorted({f.name for f in fields(cls) if f.default is f.default_factory is _MISSING}):
            _require(name in d, name, f"missing (required for kind {cls.kind!r})")
        values = {k: v for k, v in d.items() if k in names}
        for name, _ in cls._images:
            if name in values:
                values[name] = ImageRef.from_dict(values[name], name)
        return cls(**values).validate()


_MISSING = fields(CPRRecord)[0].default  # dataclasses.MISSING, without importing the private name


def _score(value, name: str, required: bool) -> None:
    if value is None and not required:
        return
    _require(_is_int(value) and 0 <= value <= 10, name, f"must be an int in 0..10, got {value!r}")


def _optional_str(value, name: str) -> None:
    _require(value is None or isinstance(value, str), name, "must be a string or null")


@dataclass(frozen=True)
class T2IRecord(CPRRecord):
    image: ImageRef = None
    score: int | None = None
    kind = "t2i"
    _images = (("image", False),)
    _required_extra = ("image",)

    def validate(self):
        super().validate()
        _score(self.score, "score", required=False)
        return self


@dataclass(frozen=True)
class CaptionRecord(CPRRecord):
    """image (+ instruction) -> ``prompt``; ``followups``: further (question, answer) turns about the same image,
    trained as one conversation (each answer supervised), so one image's tokens carry many answers."""
    image: ImageRef = None
    instruction: str | None = None
    followups: tuple[tuple[str, str], ...] | None = None
    kind = "caption"
    _images = (("image", True),)
    _required_extra = ("image",)

    def __post_init__(self):
        if isinstance(self.followups, (list, tuple)):  # JSON gives lists: one in-memory form, equal after a round trip
            turns = tuple(tuple(t) if isinstance(t, list) else t for t in self.followups)
            object.__setattr__(self, "followups", turns)

    def validate(self):
        super().validate()
        _optional_str(self.instruction, "instruction")
        if self.followups is not None:
            _require(isinstance(self.followups, tuple) and len(self.followups) > 0, "followups",
                     "must be a non-empty list of [question, answer] pairs or null")
            for i, turn in enumerate(self.followups):
                _require(isinstance(turn, tuple) and len(turn) == 2
                         and all(isinstance(s, str) and s.strip() for s in turn),
                         f"followups[{i}]", "must be [question, answer]: two non-empty strings")
        return self


@dataclass(frozen=True)
class JudgementRecord(CPRRecord):
    image: ImageRef = None
    reasoning: str = None
    score: int = None
    instruction: str | None = None
    kind = "judgement"
    _images = (("image", True),)
    _required_extra = ("image", "reasoning", "score")

    def validate(self):
        super().validate()
        _require(isinstance(self.reasoning, str), "reasoning", "must be a string")
        _score(self.score, "score", required=True)
        _optional_str(self.instruction, "instruction")
        return self


@dataclass(frozen=True)
class ReflectionRecord(CPRRecord):
    loser_image: ImageRef = None
    winner_image: ImageRef = None
    loser_score: int | None = None
    winner_score: int | None = None
    kind = "reflection"
    _images = (("loser_image", True), ("winner_image", False))
    _required_extra = ("loser_image", "winner_image")

    def validate(self):
        super().validate()
        _score(self.loser_score, "loser_score", required=False)
        _score(self.winner_score, "winner_score", required=False)
        if self.loser_score is not None and self.winner_score is not None:
            _require(self.winner_score >= self.loser_score, "winner_score", "is below loser_score")
        return self


@dataclass(frozen=True)
class TextRecord(CPRRecord):
    """Text in, text out, no image: proposing a prompt, rating a prompt, answering a question without an image."""
    instruction: str = None  # the user turn
    response: str = None  # the target reply
    kind = "text"
    _required_extra = ("instruction", "response")

    def validate(self):
        super().validate()
        _require(isinstance(self.instruction, str) and self.instruction.strip() != "", "instruction",
                 "must be a non-empty string")
        _require(isinstance(self.response, str) and self.response.strip() != "", "response", "must be a non-empty string")
        return self


_BY_KIND: dict[str, type[CPRRecord]] = {c.kind: c for c in (T2IRecord, CaptionRecord, JudgementRecord, ReflectionRecord,
                                                              TextRecord)}
assert tuple(_BY_KIND) == KINDS
# The version-2 columns: the union of every kind's fields, in a fixed order.
COLUMNS: tuple[str, ...] = ("id", "kind", *dict.fromkeys(f.name for c in _BY_KIND.values() for f in fields(c) if f.name != "id"))


def record_from_dict(d, version: int = SCHEMA_VERSION) -> CPRRecord:
    """Parses and validates one record line of the given schema version; raises RecordError naming the field."""
    _require(isinstance(d, dict), "<record>", f"must be a JSON object, got {type(d).__name__}")
    kinds = KINDS if version >= 2 else V1_KINDS
    kind = d.get("kind")
    _require(kind in kinds, "kind", f"must be one of {', '.join(kinds)} in schema version {version}, got {kind!r}")
    cls = _BY_KIND[kind]
    if version == 1:
        return cls.from_dict(d)
    unknown = sorted(set(d) - set(COLUMNS))
    _require(not unknown, unknown[0] if unknown else "", f"not a column of schema version 2 ({', '.join(COLUMNS)})")
    own = {f.name for f in fields(cls)}
    for name in COLUMNS:
        if name not in own and name != "kind":
            _require(d.get(name) is None, name, f"must be null for kind {kind!r}")
    values = {k: v for k, v in d.items() if k in own}
    if "provenance" in values:
        values["provenance"] = _provenance_from_json(values["provenance"])
    return cls.from_dict(values)


def _provenance_from_json(text) -> dict:
    _require(isinstance(text, str), "provenance", f"must be a JSON object encoded as a string, got {type(text).__name__}")
    try:
        value = json.loads(text)
    except json.JSONDecodeError as e:
        raise RecordError(f"field 'provenance': not valid JSON ({e.msg} at column {e.colno})") from None
    _require(isinstance(value, dict), "provenance", f"must encode a JSON object, got {type(value).__name__}")
    return value


def _line_version(d) -> int:
    """For a directory without manifest.json: version-2 lines carry provenance as a string."""
    return 2 if isinstance(d, dict) and isinstance(d.get("provenance"), str) else 1


@dataclass(frozen=True)
class Manifest:
    num_records: int
    counts: dict[str, int]
    shards: list[str]
    source_model: str | None = None
    seed: int | None = None
    config: dict = field(default_factory=dict)
    schema_version: int | None = SCHEMA_VERSION  # None: no manifest.json, each line's version is inferred

    def to_dict(self) -> dict:
        return asdict(self)


def read_manifest(data_dir: str) -> Manifest:
    path = os.path.join(data_dir, MANIFEST)
    if not os.path.isdir(data_dir):
        raise RecordError(f"data directory {data_dir!r} does not exist")
    if not os.path.exists(path):
        shards = sorted(f for f in os.listdir(data_dir) if f.startswith("data-") and f.endswith(".jsonl"))
        if not shards:
            raise RecordError(f"{data_dir}: no {MANIFEST} and no data-*.jsonl shards")
        return Manifest(num_records=-1, counts={}, shards=shards, schema_version=None)  # counts unknown until read
    try:
        with open(path) as f:
            d = json.load(f)
    except json.JSONDecodeError as e:
        raise RecordError(f"{path}: not valid JSON ({e})") from None
    version = d.get("schema_version")
    if version not in READABLE_VERSIONS:
        raise RecordError(f"{path}: schema_version {version!r}, this unicorn reads versions "
                          f"{', '.join(map(str, READABLE_VERSIONS))}")
    known = {f.name for f in fields(Manifest)}
    manifest = Manifest(**{k: v for k, v in d.items() if k in known})
    missing = [s for s in manifest.shards if not os.path.exists(os.path.join(data_dir, s))]
    if missing:
        raise RecordError(f"{path}: shards listed but absent: {', '.join(missing)}")
    return manifest


def read_records(data_dir: str, on_bad_record: str = "stop", warn=print, with_location: bool = False) -> Iterator:
    """Yields validated records (or ``(record, "file:line")`` with ``with_location``) shard by shard, of schema
    version 1 or 2 as the manifest says. A bad line raises a one-line RecordError naming ``file:line`` and the field
    (``on_bad_record="stop"``) or is reported through ``warn`` and skipped (``"skip"``)."""
    if on_bad_record not in ("stop", "skip"):
        raise ValueError(f"on_bad_record must be 'stop' or 'skip', got {on_bad_record!r}")
    manifest = read_manifest(data_dir)
    for shard in manifest.shards:
        path = os.path.join(data_dir, shard)
        with open(path, encoding="utf-8") as f:
            for line_no, line in enumerate(f, 1):
                if not line.strip():
                    continue
                try:
                    try:
                        d = json.loads(line)
                    except json.JSONDecodeError as e:
                        raise RecordError(f"not valid JSON ({e.msg} at column {e.colno})") from None
                    record = record_from_dict(d, manifest.schema_version or _line_version(d))
                    yield (record, f"{path}:{line_no}") if with_location else record
                except (RecordError, TypeError) as e:
                    message = f"{path}:{line_no}: bad record: {e}"
                    if on_bad_record == "stop":
                        raise RecordError(message + " (use --on-bad-record skip to skip such lines)") from None
                    warn(f"warning: skipped {message}")


def write_dataset(
    data_dir: str,
    records: Iterable[CPRRecord],
    *,
    shard_size: int = 10000,
    source_model: str | None = None,
    seed: int | None = None,
    config: dict | None = None,
) -> Manifest:
    """Writes shards and manifest.json of schema version 2 (each file via a temp file + rename). Images must already be
    in place."""
    os.makedirs(data_dir, exist_ok=True)
    counts = {k: 0 for k in KINDS}
    shards: list[str] = []
    ids: set[str] = set()
    batch: list[str] = []

    def flush():
        name = f"data-{len(shards):05d}.jsonl"
        _atomic_write(os.path.join(data_dir, name), "".join(batch))
        shards.append(name)
        batch.clear()

    for record in records:
        try:
            record.validate()
            line = json.dumps(record.to_dict(), ensure_ascii=False) + "\n"
        except RecordError as e:
            raise RecordError(f"record {record.id!r}: {e}") from None
        if record.id in ids:
            raise RecordError(f"field 'id': duplicate id {record.id!r}")
        ids.add(record.id)
        counts[record.kind] += 1
        batch.append(line)
        if len(batch) >= shard_size:
            flush()
    if batch or not shards:
        flush()
    manifest = Manifest(num_records=len(ids), counts=counts, shards=shards, source_model=source_model, seed=seed,
                        config=dict(config or {}))
    _atomic_write(os.path.join(data_dir, MANIFEST), json.dumps(manifest.to_dict(), indent=2) + "\n")
    return manifest


def _atomic_write(path: str, text: str) -> None:
    fd, tmp = tempfile.mkstemp(dir=os.path.dirname(path) or ".", prefix=".tmp-")
    with os.fdopen(fd, "w", encoding="utf-8") as f:
        f.write(text)
    os.replace(tmp, path)
