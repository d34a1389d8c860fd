"""Text features through the public API: stop strings, logprobs, candidate probabilities, JSON schemas.

The toy-world model (embedded, has a tokenizer) drives stop strings and grammars; a tiny random transformers
Janus checkpoint (no tokenizer) is the independent reference for log-probabilities.
"""
import pytest

from janus_reference import make_hf_janus
from unicorn import Engine, SamplingParams
from unicorn.toyworld.model import default_model_path


@pytest.fixture(scope="module")
def toy():
    return Engine(default_model_path(), num_kv_blocks=512, block_size=4)


@pytest.fixture(scope="module")
def hf(tmp_path_factory):
    model = make_hf_janus("gqa48", seed=5)
    path = tmp_path_factory.mktemp("text_features")
    model.save_pretrained(path)
    return model, str(path)


# ---- stop strings -------------------------------------------------------------------------------------
def test_stop_string_across_token_boundaries_cuts_the_text(toy):
    free = toy.generate("Rate this:", SamplingParams(max_tokens=24, temperature=0.0))[0]
    pieces = [toy.tokenizer.decode([t]) for t in free.token_ids]
    # A stop string that starts inside one token and ends inside a later one.
    k = next(j for j in range(1, len(pieces) - 1) if len(pieces[j]) >= 2 and len(pieces[j + 1]) >= 2)
    stop = pieces[k][1:] + pieces[k + 1][:-1]
    assert stop not in "".join(pieces[: k + 1])  # it first completes with token k + 1
    before = "".join(pieces[:k]) + pieces[k][:1]
    cut, kept = toy.generate("Rate this:", SamplingParams(max_tokens=24, temperature=0.0, stop=(
        "never appears in this text", stop)))[0], toy.generate(
        "Rate this:", SamplingParams(max_tokens=24, temperature=0.0, stop=stop, include_stop_str_in_output=True))[0]
    for out in (cut, kept):
        assert out.finish_reason == "stop"
        assert out.token_ids == free.token_ids[: k + 2]
    assert cut.text == toy.tokenizer.decode(free.token_ids[: k + 2]).split(stop)[0]
    assert cut.text == before and stop not in cut.text
    assert kept.text == cut.text + stop


def test_stop_strings_finish_each_sample_on_its_own(toy):
    stop = (" circle",)
    outs = toy.generate(["Rate this:", "Question: what"], SamplingParams(n=3, max_tokens=30, seed=3, stop=stop))
    num_stopped = sum(" circle" in toy.tokenizer.decode(s.token_ids) for out in outs for s in out.samples)
    assert 0 < num_stopped
    for out in outs:
        for sample in out.samples:
            full = toy.tokenizer.decode(sample.token_ids)
            if sample.finish_reason == "stop" and " circle" in full:
                assert full.endswith(" circle") or " circle" in toy.tokenizer.decode(sample.token_ids[-2:])
                assert sample.text == full[: full.index(" circle")]
            else:
                assert " circle" not in full


def test_stop_strings_without_a_tokenizer_are_refused_naming_stop(hf):
    _, path = hf
    engine = Engine(path, num_kv_blocks=64)
    assert engine.tokenizer is None
    out = engine.generate([[1, 5, 6]], SamplingParams(max_tokens=4, stop=("x",)))[0]
    assert out.error is not None and "stop" in out.error and not out.samples
    with pytest.raises(ValueError, match="stop"):
        SamplingParams(stop=("",))
