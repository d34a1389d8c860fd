"""A tiny random BAGEL checkpoint in the official layout, written once per session."""
import pytest

from unicorn.models.bagel_tiny import write_random_bagel_checkpoint


@pytest.fixture(scope="session")
def bagel_tiny_path(tmp_path_factory) -> str:
    return write_random_bagel_checkpoint(str(tmp_path_factory.mktemp("bagel_tiny")), preset="tiny", seed=0)


@pytest.fixture(scope="session")
def bagel_tiny(bagel_tiny_path):
    from unicorn.models import load_model

    return load_model(bagel_tiny_path)
