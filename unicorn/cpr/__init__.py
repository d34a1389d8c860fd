"""Cognitive Pattern Reconstruction (method.md §3): the training-sample records shared by self-play and training."""
from unicorn.cpr.schema import (
    KINDS,
    SCHEMA_VERSION,
    CaptionRecord,
    CPRRecord,
    ImageRef,
    JudgementRecord,
    Manifest,
    RecordError,
    ReflectionRecord,
    T2IRecord,
    read_manifest,
    read_records,
    record_from_dict,
    write_dataset,
)

__all__ = [
    "KINDS", "SCHEMA_VERSION", "CaptionRecord", "CPRRecord", "ImageRef", "JudgementRecord", "Manifest", "RecordError",
    "ReflectionRecord", "T2IRecord", "read_manifest", "read_records", "record_from_dict", "write_dataset",
]
