"""Errors raised while reading a checkpoint directory."""


class CheckpointError(ValueError):
    """A checkpoint directory is missing files, tensors, or holds tensors of the wrong name or shape."""
