"""CPR storage at scale (unicorn/cpr/shards.py): per-kind Parquet shards that Hugging Face `datasets` loads together,
sha256 of every shard and image, an append-only writer that a crash at any point leaves resumable without duplicates
or losses, and memory bounded by one row group per stream."""
import glob
import json
import os

import pytest

from unicorn.cpr import shards as shards_mod
from unicorn.cpr.schema import (CaptionRecord, ImageRef, JudgementRecord, RecordError, ReflectionRecord, T2IRecord,
                                TextRecord, read_manifest, read_records, write_dataset)
from unicorn.cpr.shards import DatasetWriter, verify_dataset


def _records(n: int, images_dir: str | None = None) -> list:
    if images_dir is not None:
        os.makedirs(os.path.join(images_dir, "images"), exist_ok=True)
        for i in range(4):
            with open(os.path.join(images_dir, "images", f"i{i}.png"), "wb") as f:
                f.write(bytes([i]) * (10 + i))
    out = []
    for i in range(n):
        img = ImageRef(path=f"images/i{i % 4}.png", vq_codes=(i, i + 1, 7))
        meta = dict(category=f"cat{i % 3}", prompt=f"prompt {i}", seed=None if i % 5 == 0 else i,
                    provenance={"rollout": i % 8, "nested": {"x": [i]}})
        out += [T2IRecord(id=f"t2i-{i}", image=img, score=i % 11, **meta),
                CaptionRecord(id=f"cap-{i}", image=ImageRef(path=img.path), instruction=None if i % 2 else "Say.",
                              **meta),
                JudgementRecord(id=f"jud-{i}", image=ImageRef(path=img.path), reasoning=f"r{i}", score=i % 11, **meta)]
        if i % 3 == 0:
            out.append(ReflectionRecord(id=f"ref-{i}", loser_image=ImageRef(path="images/i0.png"), winner_image=img,
                                        loser_score=1, winner_score=9, **meta))
        if i % 4 == 0:
            out.append(TextRecord(id=f"txt-{i}", instruction="Propose.", response=f"prompt {i}", **meta))
    return out


def _files(root) -> dict:
    return {os.path.relpath(p, root): open(p, "rb").read() for p in sorted(glob.glob(f"{root}/**", recursive=True))
            if os.path.isfile(p)}


def test_shards_of_different_kinds_load_together_with_datasets(tmp_path):
    """The old layout (JSON lines, a shard per kind) fails in `datasets` with a cast error (a column all null in the
    first shard); the Parquet shards of one fixed schema load together, every value as written."""
    datasets = pytest.importorskip("datasets")
    records = _records(12, str(tmp_path / "new"))
    manifest = write_dataset(str(tmp_path / "new"), records, shard_size=5, shard_format="parquet", per_kind=True)
    files = [str(tmp_path / "new" / s) for s in manifest.shards]
    assert len({s.split("-")[1] for s in manifest.shards}) == 5 and len(files) > 5  # every kind, several shards each
    ds = datasets.load_dataset("parquet", data_files=files, split="train", cache_dir=str(tmp_path / "hf"))
    assert ds.num_rows == len(records)
    rows = {row["id"]: row for row in ds}
    for record in records:
        assert rows[record.id] == record.to_dict()

    write_dataset(str(tmp_path / "old"), records, shard_size=5, shard_format="jsonl", per_kind=True)
    old = sorted(glob.glob(str(tmp_path / "old" / "data-*.jsonl")))
    with pytest.raises(Exception) as err:  # what the issue reports: the JSON layout cannot be loaded in one go
        datasets.load_dataset("json", data_files=old, split="train", cache_dir=str(tmp_path / "hf"))
    assert "cast" in repr(err.value.__cause__ or err.value).lower() or "cast" in str(err.value).lower()


def test_parquet_round_trip_and_sha256(tmp_path):
    records = _records(30, str(tmp_path))
    write_dataset(str(tmp_path), records, shard_size=2, shard_format="parquet", per_kind=True)
    manifest = write_dataset(str(tmp_path), records, shard_size=7, shard_format="parquet", per_kind=True)
    assert sorted(p.name for p in tmp_path.glob("data-*")) == sorted(manifest.shards)  # the earlier set's are gone
    back = {r.id: r for r in read_records(str(tmp_path))}
    assert back == {r.id: r for r in records}
    assert [r.kind for r in read_records(str(tmp_path))] == sorted((r.kind for r in records),
                                                                    key=["t2i", "caption", "judgement", "reflection",
                                                                         "text"].index)
    on_disk = json.loads((tmp_path / "manifest.json").read_text())
    assert set(on_disk["shard_sha256"]) == set(manifest.shards) and sum(on_disk["shard_records"].values()) == 30 * 3 + 10 + 8
    assert sorted(on_disk["image_sha256"]) == [f"images/i{i}.png" for i in range(4)]
    assert verify_dataset(str(tmp_path)) == []
    (tmp_path / "images" / "i2.png").write_bytes(b"changed")
    shard = tmp_path / manifest.shards[0]
    shard.write_bytes(shard.read_bytes()[:-1] + b"\0")
    problems = verify_dataset(str(tmp_path))
    assert any("i2.png" in p for p in problems) and any(manifest.shards[0] in p for p in problems)
    assert read_manifest(str(tmp_path)).num_records == manifest.num_records


class _Crash(Exception):
    pass


def _build(data_dir, records, crash_after=None, **kw):
    writer = DatasetWriter(str(data_dir), shard_size=4, **kw)
    for i, record in enumerate(records):
        if crash_after is not None and i == crash_after:
            raise _Crash
        writer.add(record)
    return writer.close(seed=3, config={"x": 1})


@pytest.mark.parametrize("fmt", ["parquet", "jsonl"])
def test_a_crash_at_any_record_resumes_to_the_same_bytes(tmp_path, fmt, monkeypatch):
    monkeypatch.setattr(shards_mod, "ROW_GROUP", 3)  # row groups spill mid-shard, so a crash can leave a temp file
    records = _records(9, str(tmp_path / "ref"))
    _build(tmp_path / "ref", records, shard_format=fmt)
    reference = _files(tmp_path / "ref")
    for crash_after in (1, 5, 13, 22, len(records) - 1):  # inside a first shard, mid-shard, near the end
        out = tmp_path / f"c{crash_after}"
        _records(0, str(out))
        for rel in ("images/i0.png", "images/i1.png", "images/i2.png", "images/i3.png"):
            (out / rel).write_bytes((tmp_path / "ref" / rel).read_bytes())
        with pytest.raises(_Crash):
            _build(out, records, crash_after=crash_after, shard_format=fmt)
        assert not (out / "manifest.json").exists()
        with pytest.raises(_Crash):  # a second crash further on, after a resume
            _build(out, records, crash_after=min(crash_after + 6, len(records) - 1), shard_format=fmt)
        _build(out, records, shard_format=fmt)
        assert _files(out) == reference, crash_after


def test_a_kill_between_the_shard_rename_and_its_sidecar(tmp_path, monkeypatch):
    """A shard renamed into place but without its sidecar is not committed: the re-run rewrites it, once."""
    records = _records(6, str(tmp_path / "ref"))
    _build(tmp_path / "ref", records)
    out = tmp_path / "out"
    _records(0, str(out))
    for p in (tmp_path / "ref" / "images").iterdir():
        (out / "images" / p.name).write_bytes(p.read_bytes())
    real = shards_mod.atomic_write
    calls = []

    def dies_on_second_sidecar(path, data):
        if path.endswith(".parquet.json"):
            calls.append(path)
        if len(calls) == 2:
            raise _Crash
        real(path, data)

    monkeypatch.setattr(shards_mod, "atomic_write", dies_on_second_sidecar)
    with pytest.raises(_Crash):
        _build(out, records)
    monkeypatch.setattr(shards_mod, "atomic_write", real)
    assert len(list(out.glob("data-*.parquet"))) == 2  # two shards renamed, one committed
    _build(out, records)
    assert _files(out) == _files(tmp_path / "ref")
    assert [r.id for r in read_records(str(out))] == [r.id for r in read_records(str(tmp_path / "ref"))]


def test_a_resume_that_replays_other_records_is_refused(tmp_path):
    records = _records(6, str(tmp_path))
    with pytest.raises(_Crash):
        _build(tmp_path, records, crash_after=len(records) - 2)
    other = [r for r in records if r.id != "t2i-1"]
    with pytest.raises(RecordError, match="resumed build differs"):
        _build(tmp_path, other)


def test_memory_holds_one_row_group_per_stream(tmp_path, monkeypatch):
    import pyarrow.parquet as pq

    monkeypatch.setattr(shards_mod, "ROW_GROUP", 16)
    _records(0, str(tmp_path))
    writer = DatasetWriter(str(tmp_path), shard_size=100)
    peak = 0
    n = 0
    for record in (r for _ in range(3) for r in _records(60)):
        record = type(record)(**{**record.__dict__, "id": f"{record.id}-{n}"})
        n += 1
        writer.add(record)
        peak = max(peak, max(len(s.rows) for s in writer.streams.values()))
    manifest = writer.close()
    assert peak <= 16 and manifest.num_records == n
    first = tmp_path / manifest.shards[0]
    assert pq.ParquetFile(first).metadata.num_row_groups == 100 // 16 + 1
    assert sum(1 for _ in read_records(str(tmp_path))) == n


def test_progress_of_another_build_is_not_resumed(tmp_path):
    """A killed build of other records (another recipe, say) leaves progress that a build with another key ignores."""
    records = _records(6, str(tmp_path / "ref"))
    DatasetWriter(str(tmp_path / "ref"), shard_size=4, build_key="b").close()
    ref = DatasetWriter(str(tmp_path / "ref"), shard_size=4, build_key="b")
    for r in records:
        ref.add(r)
    ref.close()
    out = tmp_path / "out"
    _records(0, str(out))
    first = DatasetWriter(str(out), shard_size=4, build_key="a")
    other = [type(r)(**{**r.__dict__, "prompt": r.prompt + " (other recipe)"}) for r in records]
    for r in other[:-3]:
        first.add(r)  # two shards committed, then killed
    again = DatasetWriter(str(out), shard_size=4, build_key="b")
    for r in records:
        again.add(r)
    again.close()
    assert _files(out) == _files(tmp_path / "ref")
