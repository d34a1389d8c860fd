"""Append-only JSONL records keyed by ``id``: the resume points of a UniCycle run.

Each record is written with one ``write`` of a whole line, then flushed and fsynced, so a crash leaves at most a
torn last line; ``read_records`` drops (and truncates away) such a line, so that instance is simply redone.
"""
from __future__ import annotations

import json
import os
from pathlib import Path


def read_records(path: str | os.PathLike) -> dict[str, dict]:
    """``{id: record}`` of every complete line; a torn or unreadable last line is cut off the file."""
    path = Path(path)
    if not path.exists():
        return {}
    data = path.read_bytes()
    records, good_end, start = {}, 0, 0
    while start < len(data):
        end = data.find(b"\n", start)
        if end < 0:
            break  # a torn last line (no newline): dropped
        line = data[start:end]
        try:
            record = json.loads(line)
        except ValueError:
            if data.find(b"\n", end + 1) >= 0:  # not the last line: the file is damaged, not torn
                raise ValueError(f"{path}: unreadable record at byte {start}; remove the file to start over") from None
            break
        records[record["id"]] = record
        good_end = start = end + 1
    if good_end < len(data):
        with open(path, "r+b") as f:
            f.truncate(good_end)
    return records


def append_record(path: str | os.PathLike, record: dict) -> None:
    """Appends one record as one line, durably."""
    line = (json.dumps(record, ensure_ascii=False, sort_keys=True) + "\n").encode("utf-8")
    with open(path, "ab") as f:
        f.write(line)
        f.flush()
        os.fsync(f.fileno())
