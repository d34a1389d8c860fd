"""Stop strings on the embedded toy model (it has a byte-level BPE tokenizer): matched across token boundaries,
the text cut before the stop string (or kept), and a clear per-request error without a tokenizer."""
import os
import shutil

import pytest

from unicorn import Engine, SamplingParams
from unicorn.toyworld.model import default_model_path

PROMPTS = ["a red circle", "describe the picture"]


@pytest.fixture(scope="module")
def engine():
    return Engine(default_model_path(), num_kv_blocks=256)


def _stop_spanning_two_tokens(engine, token_ids):
    """A stop string that starts inside one output token and ends inside a later one."""
    tok = engine.tokenizer
    pieces = [tok.decode([t]) for t in token_ids]
    for k in range(3, len(pieces) - 1):
        a, b = pieces[k], pieces[k + 1]
        if len(a) >= 2 and len(b) >= 1 and a.strip() and b.strip():
            return k, a[1:] + b[:1]
    pytest.skip("no two adjacent printable output tokens")


def test_stop_string_across_tokens_cuts_the_text_and_finishes_the_sample(engine):
    plain = engine.generate(PROMPTS, SamplingParams(temperature=0.0, max_tokens=40, ignore_eos=True))
    for prompt, out in zip(PROMPTS, plain):
        k, stop = _stop_spanning_two_tokens(engine, out.token_ids)
        full = out.text
        first = full.find(stop)
        # the first output prefix whose decoded text contains the stop string
        end = next(j for j in range(1, len(out.token_ids) + 1) if stop in engine.tokenizer.decode(out.token_ids[:j]))
        params = SamplingParams(temperature=0.0, max_tokens=40, ignore_eos=True, stop=(stop, "never-in-there"))
        cut = engine.generate(prompt, params)[0]
        assert cut.finish_reason == "stop"
        assert cut.token_ids == out.token_ids[:end]  # finished on the token that completed the stop string
        assert cut.text == full[:first]
        kept = engine.generate(prompt, SamplingParams(temperature=0.0, max_tokens=40, ignore_eos=True, stop=stop,
                                                      include_stop_str_in_output=True))[0]
        assert kept.text == full[: first + len(stop)] and kept.token_ids == cut.token_ids


def test_stop_strings_per_sample_with_n_and_sampling(engine):
    params = SamplingParams(n=4, temperature=1.0, max_tokens=30, seed=5, ignore_eos=True)
    plain = engine.generate(PROMPTS[0], params)[0]
    stop = " "  # every sample stops at its first space after the first token
    stopped = engine.generate(PROMPTS[0], SamplingParams(n=4, temperature=1.0, max_tokens=30, seed=5,
                                                          ignore_eos=True, stop=(stop,)))[0]
    for a, b in zip(plain.samples, stopped.samples):
        assert b.token_ids == a.token_ids[: len(b.token_ids)]
        if stop in a.text:
            assert b.finish_reason == "stop" and stop not in b.text and a.text.startswith(b.text)
        else:
            assert b.token_ids == a.token_ids


def test_stop_strings_without_a_tokenizer_fail_the_request_with_a_reason(tmp_path):
    src = default_model_path()
    for name in os.listdir(src):
        if not name.startswith(("tokenizer", "special_tokens")):
            shutil.copy(os.path.join(src, name), tmp_path / name)
    engine = Engine(str(tmp_path), num_kv_blocks=64)
    assert engine.tokenizer is None
    out = engine.generate([0, 5, 6, 7], SamplingParams(max_tokens=3, stop=("x",)))[0]
    assert out.error is not None and "stop" in out.error and "tokenizer" in out.error
    assert engine.generate([0, 5, 6, 7], SamplingParams(max_tokens=3))[0].error is None


@pytest.mark.parametrize("bad", [("",), (3,)])
def test_bad_stop_strings(bad):
    with pytest.raises(ValueError, match="SamplingParams.stop"):
        SamplingParams(stop=bad)
