"""Model families on shared layers, and the registry/loader the engine uses to build them from a checkpoint."""
from unicorn.models.errors import CheckpointError
from unicorn.models.loader import load_model, load_tokenizer
from unicorn.models.spec import ModelSpec

__all__ = ["CheckpointError", "ModelSpec", "load_model", "load_tokenizer"]
