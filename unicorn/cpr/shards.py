"""CPR shards at scale: an append-only, resumable writer with sha256 of every shard and image, and Parquet shards
that any columnar reader (Hugging Face ``datasets``) loads together whatever kinds each one holds.

Why Parquet: a JSON-lines shard has no types of its own, so a reader infers them from the first rows it sees; a shard
of t2i records has ``reasoning`` all null (type null) and a judgement shard has it as string, and
``datasets.load_dataset("json", ...)`` then fails to cast one to the other. Every Parquet shard carries the one
fixed schema of ``arrow_schema()``.

Resume: a shard is written to a temp file and renamed, then its sidecar (sha256, records, image hashes, last id) is
written into ``.cpr-progress/``; only a shard with a sidecar counts. Re-running the same deterministic producer
skips the records already committed (checked by id at each shard boundary), so a kill at any moment leaves nothing
half-written and nothing a re-run would duplicate or lose. ``manifest.json`` is written last (it publishes the data
set), then the progress directory is removed. Memory holds one row group per open stream, never the data set.
"""
from __future__ import annotations

import hashlib
import json
import os
import shutil
import tempfile
from dataclasses import fields

from unicorn.cpr.schema import (COLUMNS, KINDS, MANIFEST, CPRRecord, ImageRef, Manifest, RecordError, _BY_KIND,
                                SCHEMA_VERSION)

PROGRESS = ".cpr-progress"
FORMATS = ("parquet", "jsonl")
ROW_GROUP = 512  # rows buffered per open stream before they go to disk


def arrow_schema():
    """The fixed Arrow schema of a version-2 shard: ``COLUMNS`` in order, every one nullable."""
    import pyarrow as pa

    image = pa.struct([("path", pa.string()), ("vq_codes", pa.list_(pa.int32()))])
    types = {"seed": pa.int64(), "provenance": pa.string()}
    for cls in _BY_KIND.values():
        for f in fields(cls):
            if f.name in types:
                continue
            if f.type in ("ImageRef", ImageRef):
                types[f.name] = image
            elif "tuple[tuple[str, str]" in str(f.type):  # caption follow-ups: [question, answer] pairs
                types[f.name] = pa.list_(pa.list_(pa.string()))
            elif "int" in str(f.type):
                types[f.name] = pa.int64()
            else:
                types[f.name] = pa.string()
    types["kind"] = pa.string()
    return pa.schema([(name, types[name]) for name in COLUMNS])


def sha256_file(path: str, chunk: int = 1 << 20) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        while block := f.read(chunk):
            digest.update(block)
    return digest.hexdigest()


def atomic_write(path: str, data: bytes) -> None:
    """Writes ``path`` whole or not at all (a temp file in the same directory, then a rename)."""
    fd, tmp = tempfile.mkstemp(dir=os.path.dirname(path) or ".", prefix=".tmp-")
    try:
        with os.fdopen(fd, "wb") as f:
            f.write(data)
        os.replace(tmp, path)
    except BaseException:
        if os.path.exists(tmp):
            os.unlink(tmp)
        raise


class _Stream:
    """One sequence of shards (``data-<name>-00000.parquet`` ...); ``name`` None gives ``data-00000.jsonl``."""

    def __init__(self, owner: "DatasetWriter", name: str | None):
        self.owner, self.name = owner, name
        self.committed: list[dict] = []  # sidecars of this stream's committed shards, in order
        self.seen = 0  # records offered so far in this run
        self.rows: list[dict] = []  # the open shard's rows not yet on disk
        self.images: dict[str, str] = {}
        self.open_count = 0
        self.tmp = None  # (temp path, parquet writer or file)
        self.last_id = None

    def shard_name(self, index: int) -> str:
        middle = "" if self.name is None else f"{self.name}-"
        return f"data-{middle}{index:05d}.{self.owner.shard_format}"

    @property
    def num_committed(self) -> int:
        return sum(s["num_records"] for s in self.committed)

    def add(self, record: CPRRecord, line: dict) -> None:
        self.seen += 1
        if self.seen <= self.num_committed:  # written by an earlier run: check we are replaying the same records
            boundary = 0
            for side in self.committed:
                boundary += side["num_records"]
                if boundary == self.seen and side["last_id"] != record.id:
                    raise RecordError(f"{self.owner.data_dir}: shard {side['name']} ends with {side['last_id']!r} but "
                                      f"this run's record {self.seen} is {record.id!r}: the resumed build differs from "
                                      f"the one that wrote it; remove the directory and run again")
            return
        for ref in record.images().values():
            if ref.path is not None and ref.path not in self.images:
                digest = self.owner.image_sha256(ref.path)
                if digest is not None:
                    self.images[ref.path] = digest
        self.rows.append(line)
        self.open_count += 1
        self.last_id = record.id
        if len(self.rows) >= ROW_GROUP:
            self._spill()
        if self.open_count >= self.owner.shard_size:
            self.commit()

    def _spill(self) -> None:
        if self.tmp is None:
            fd, path = tempfile.mkstemp(dir=self.owner.data_dir, prefix=".tmp-")
            if self.owner.shard_format == "parquet":
                import pyarrow.parquet as pq

                os.close(fd)
                self.tmp = (path, pq.ParquetWriter(path, self.owner.schema, compression="zstd"))
            else:
                self.tmp = (path, os.fdopen(fd, "w", encoding="utf-8"))
        path, handle = self.tmp
        if self.owner.shard_format == "parquet":
            import pyarrow as pa

            handle.write_table(pa.Table.from_pylist(self.rows, schema=self.owner.schema))
        else:
            handle.write("".join(json.dumps(r, ensure_ascii=False) + "\n" for r in self.rows))
        self.rows = []

    def commit(self) -> None:
        if self.open_count == 0:
            return
        self._spill()
        path, handle = self.tmp
        handle.close()
        name = self.shard_name(len(self.committed))
        final = os.path.join(self.owner.data_dir, name)
        os.chmod(path, 0o644)  # mkstemp's 0600 would keep a shared data set from other users
        os.replace(path, final)
        side = {"name": name, "stream": self.name, "sha256": sha256_file(final), "num_records": self.open_count,
                "last_id": self.last_id, "images": dict(sorted(self.images.items()))}
        atomic_write(os.path.join(self.owner.progress_dir, name + ".json"),
                      (json.dumps(side, sort_keys=True) + "\n").encode())
        self.committed.append(side)
        self.tmp, self.rows, self.images, self.open_count, self.last_id = None, [], {}, 0, None


class DatasetWriter:
    """Streams CPR records into shards of ``data_dir`` (see the module docstring); ``close()`` writes the manifest.

    ``per_kind``: one stream of shards per kind (``data-t2i-00000.parquet``, ...), listed kind by kind, else one
    stream in the order given. Re-opening a directory whose ``.cpr-progress/`` has the same ``build_key`` (what
    determines the records: recipe, seed, ...) resumes it; otherwise an earlier data set there (its manifest and
    shards) is replaced."""

    def __init__(self, data_dir: str, *, shard_size: int = 10000, shard_format: str = "parquet",
                 per_kind: bool = True, check_ids: bool = False, require_images: bool = True,
                 build_key: str = ""):
        if shard_format not in FORMATS:
            raise ValueError(f"shard_format must be one of {', '.join(FORMATS)}, got {shard_format!r}")
        if not isinstance(shard_size, int) or shard_size < 1:
            raise ValueError(f"shard_size must be an integer >= 1, got {shard_size!r}")
        self.data_dir, self.shard_size, self.shard_format, self.per_kind = str(data_dir), shard_size, shard_format, per_kind
        self.progress_dir = os.path.join(self.data_dir, PROGRESS)
        self.schema = arrow_schema() if shard_format == "parquet" else None
        self.ids: set[str] | None = set() if check_ids else None
        self.require_images = require_images
        self.counts = {k: 0 for k in KINDS}
        os.makedirs(self.data_dir, exist_ok=True)
        key_file = os.path.join(self.progress_dir, "build-key")
        resuming = os.path.isdir(self.progress_dir)
        if resuming and (not os.path.exists(key_file) or open(key_file).read() != build_key):
            shutil.rmtree(self.progress_dir)  # left by a build of something else (another recipe, say): start over
            resuming = False
        os.makedirs(self.progress_dir, exist_ok=True)
        if not resuming:
            atomic_write(key_file, build_key.encode())
        for entry in os.listdir(self.data_dir):
            if entry.startswith(".tmp-"):
                os.unlink(os.path.join(self.data_dir, entry))
        sides = {}
        if resuming:
            for entry in sorted(os.listdir(self.progress_dir)):
                if entry.endswith(".parquet.json") or entry.endswith(".jsonl.json"):
                    with open(os.path.join(self.progress_dir, entry)) as f:
                        side = json.load(f)
                    if os.path.exists(os.path.join(self.data_dir, side["name"])):
                        sides[side["name"]] = side
        if os.path.exists(os.path.join(self.data_dir, MANIFEST)):
            os.unlink(os.path.join(self.data_dir, MANIFEST))  # unpublished until this build's close()
        for entry in os.listdir(self.data_dir):  # shards of an earlier data set, or renamed but never committed
            if entry.startswith("data-") and entry.endswith((".jsonl", ".parquet")) and entry not in sides:
                os.unlink(os.path.join(self.data_dir, entry))
        self.streams: dict[str | None, _Stream] = {}
        for name in (KINDS if per_kind else (None,)):
            stream = _Stream(self, name)
            index = 0
            while stream.shard_name(index) in sides:
                stream.committed.append(sides[stream.shard_name(index)])
                index += 1
            self.streams[name] = stream
        self._image_cache: dict[str, str] = {}

    def image_sha256(self, rel: str) -> str | None:
        path = os.path.join(self.data_dir, rel)
        if rel not in self._image_cache:
            if not os.path.isfile(path):
                if not self.require_images:
                    return None
                raise RecordError(f"image {rel!r} is referenced but {path} does not exist (images go in place first)")
            if len(self._image_cache) > 4096:  # a recent-images cache: one image is often used by several kinds
                self._image_cache.clear()
            self._image_cache[rel] = sha256_file(path)
        return self._image_cache[rel]

    def add(self, record: CPRRecord) -> None:
        try:
            record.validate()
            line = record.to_dict()
        except RecordError as e:
            raise RecordError(f"record {record.id!r}: {e}") from None
        if self.ids is not None:
            if record.id in self.ids:
                raise RecordError(f"field 'id': duplicate id {record.id!r}")
            self.ids.add(record.id)
        self.counts[record.kind] += 1
        self.streams[record.kind if self.per_kind else None].add(record, line)

    def close(self, *, source_model: str | None = None, seed: int | None = None, config: dict | None = None,
              extra_files: dict[str, str] | None = None) -> Manifest:
        """Commits the open shards and writes manifest.json. ``extra_files``: other files of the directory to list
        with their sha256 (e.g. the rollouts table), name -> path relative to ``data_dir``."""
        for stream in self.streams.values():
            stream.commit()
        sides = [s for stream in self.streams.values() for s in stream.committed]
        for stream in self.streams.values():
            if stream.seen < stream.num_committed:
                raise RecordError(f"{self.data_dir}: this build offered {stream.seen} records of stream "
                                  f"{stream.name or 'data'} but {stream.num_committed} were written before; remove "
                                  f"the directory and run again")
        if not sides:  # an empty data set still has one (empty) shard, as before
            empty = next(iter(self.streams.values()))
            empty.open_count, empty.last_id = 0, None
            fd, path = tempfile.mkstemp(dir=self.data_dir, prefix=".tmp-")
            os.close(fd)
            if self.shard_format == "parquet":
                import pyarrow.parquet as pq

                pq.write_table(self.schema.empty_table(), path, compression="zstd")
            name = empty.shard_name(0)
            os.replace(path, os.path.join(self.data_dir, name))
            sides = [{"name": name, "sha256": sha256_file(os.path.join(self.data_dir, name)), "num_records": 0,
                      "images": {}}]
        images: dict[str, str] = {}
        for side in sides:
            images.update(side["images"])
        files = {name: {"path": rel, "sha256": sha256_file(os.path.join(self.data_dir, rel))}
                 for name, rel in sorted((extra_files or {}).items())}
        manifest = Manifest(num_records=sum(s["num_records"] for s in sides), counts=dict(self.counts),
                            shards=[s["name"] for s in sides], source_model=source_model, seed=seed,
                            config=dict(config or {}), shard_sha256={s["name"]: s["sha256"] for s in sides},
                            shard_records={s["name"]: s["num_records"] for s in sides},
                            image_sha256=dict(sorted(images.items())), files=files)
        # counts hold every record offered, committed by an earlier run or not: a resumed producer replays them all
        atomic_write(os.path.join(self.data_dir, MANIFEST), (json.dumps(manifest.to_dict(), indent=2) + "\n").encode())
        shutil.rmtree(self.progress_dir, ignore_errors=True)
        return manifest


def verify_dataset(data_dir: str) -> list[str]:
    """Problems found checking every shard's and image's sha256 against the manifest (empty: all match)."""
    from unicorn.cpr.schema import read_manifest

    manifest = read_manifest(data_dir)
    problems = []
    for name in manifest.shards:
        want = manifest.shard_sha256.get(name)
        if want is None:
            problems.append(f"{name}: no sha256 in the manifest")
        elif sha256_file(os.path.join(data_dir, name)) != want:
            problems.append(f"{name}: sha256 differs from the manifest")
    for rel, want in manifest.image_sha256.items():
        path = os.path.join(data_dir, rel)
        if not os.path.isfile(path):
            problems.append(f"{rel}: missing")
        elif sha256_file(path) != want:
            problems.append(f"{rel}: sha256 differs from the manifest")
    for name, entry in manifest.files.items():
        path = os.path.join(data_dir, entry["path"])
        if not os.path.isfile(path) or sha256_file(path) != entry["sha256"]:
            problems.append(f"{entry['path']}: missing or sha256 differs from the manifest")
    return problems


def iter_parquet_rows(path: str, batch_size: int = 1024):
    import pyarrow.parquet as pq

    for batch in pq.ParquetFile(path).iter_batches(batch_size=batch_size):
        yield from batch.to_pylist()


assert SCHEMA_VERSION == 2  # the Arrow schema above is version 2's columns
