"""Cognitive Pattern Reconstruction (method.md §3): the training-sample records shared by self-play and training."""
from unicorn.cpr.schema import (
    KINDS,
    COLUMNS,
    READABLE_VERSIONS,
    SCHEMA_VERSION,
    CaptionRecord,
    CPRRecord,
    ImageRef,
    JudgementRecord,
    Manifest,
    RecordError,
    ReflectionRecord,
    T2IRecord,
    TextRecord,
    read_manifest,
    read_records,
    record_from_dict,
    write_dataset,
)

__all__ = [
    "COLUMNS", "KINDS", "READABLE_VERSIONS", "SCHEMA_VERSION", "CaptionRecord", "CPRRecord", "ImageRef",
    "JudgementRecord", "Manifest", "RecordError", "ReflectionRecord", "T2IRecord", "TextRecord", "read_manifest",
    "read_records", "record_from_dict", "write_dataset",
]
