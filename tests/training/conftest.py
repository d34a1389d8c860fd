import os
import sys

import pytest

os.environ.setdefault("DS_ACCELERATOR", "cpu")
sys.path.insert(0, os.path.dirname(__file__))


@pytest.fixture(scope="session")
def tiny_model(tmp_path_factory):
    from unicorn.models.janus_tiny import write_random_janus_checkpoint

    return write_random_janus_checkpoint(str(tmp_path_factory.mktemp("janus") / "tiny"), preset="tiny", seed=0)


@pytest.fixture(scope="session")
def cpr_data(tmp_path_factory):
    from unicorn.training.synthetic import write_synthetic_cpr

    path = str(tmp_path_factory.mktemp("cpr") / "data")
    write_synthetic_cpr(path, image_size=32)
    return path


@pytest.fixture(scope="session")
def tiny_bagel(tmp_path_factory):
    from unicorn.models.bagel_tiny import write_random_bagel_checkpoint

    return write_random_bagel_checkpoint(str(tmp_path_factory.mktemp("bagel") / "tiny"), preset="tiny", seed=0)
