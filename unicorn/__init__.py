"""unicorn: an inference and training engine for self-improving unified multimodal models."""

__version__ = "0.1.0"

_LAZY = {
    "Engine": "unicorn.engine.llm_engine",
    "SamplingParams": "unicorn.engine.params",
    "ImageGenParams": "unicorn.engine.params",
}


def __getattr__(name):  # lazy, so `import unicorn` stays cheap and torch-free until needed
    if name in _LAZY:
        import importlib

        return getattr(importlib.import_module(_LAZY[name]), name)
    raise AttributeError(f"module 'unicorn' has no attribute {name!r}")


__all__ = ["Engine", "SamplingParams", "ImageGenParams", "__version__"]
