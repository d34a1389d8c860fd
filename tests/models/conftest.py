"""Session fixtures: tiny transformers Janus checkpoints saved with save_pretrained."""
import pytest

from janus_reference import HF_CONFIGS, make_hf_janus


@pytest.fixture(scope="session", params=sorted(HF_CONFIGS))
def hf_checkpoint(request, tmp_path_factory):
    """(transformers model, directory it was saved to with save_pretrained)."""
    model = make_hf_janus(request.param)
    path = tmp_path_factory.mktemp(f"hf_{request.param}")
    model.save_pretrained(path)
    return model, str(path)

