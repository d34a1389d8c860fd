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


# ---- logprobs -----------------------------------------------------------------------------------------
def reference_logprobs(model, ids):
    """log_softmax of transformers' full forward over ``ids``: row p scores the token at p + 1."""
    import torch

    with torch.no_grad():
        return torch.log_softmax(model(input_ids=torch.tensor([ids])).logits[0].float(), dim=-1)


def assert_record(record, ref_row, token, k):
    assert record.token_id == token
    assert record.logprob == pytest.approx(ref_row[token].item(), abs=1e-4)
    top = ref_row.topk(k)
    assert list(record.top) == top.indices.tolist()  # most likely first
    assert list(record.top.values()) == pytest.approx(top.values.tolist(), abs=1e-4)


def test_sample_and_prompt_logprobs_equal_a_full_forward_with_prefix_caching_and_chunked_prefill(hf):
    model, path = hf
    engine = Engine(path, num_kv_blocks=256, block_size=4, max_num_batched_tokens=8)  # prompts in chunks
    shared = [1] + [17 + 3 * j for j in range(13)]
    prompts = [shared + [40, 41, 42], shared + [90, 91]]
    engine.generate(prompts[0], SamplingParams(max_tokens=2, temperature=0.0))  # fills the prefix cache
    params = SamplingParams(n=2, max_tokens=6, temperature=0.7, top_k=5, seed=11, logprobs=3, prompt_logprobs=2)
    cached, scored = engine.generate([prompts[0], prompts[1]], params)
    assert cached.num_cached_tokens == 0 and scored.num_cached_tokens == 0  # computed, not served
    plain = engine.generate(prompts[1], SamplingParams(max_tokens=1))[0]
    assert plain.num_cached_tokens > 0  # the cache did hold the shared prefix
    for out, prompt in ((cached, prompts[0]), (scored, prompts[1])):
        assert out.prompt_logprobs[0] is None and len(out.prompt_logprobs) == len(prompt)
        ref = reference_logprobs(model, prompt)
        for p in range(1, len(prompt)):
            assert_record(out.prompt_logprobs[p], ref[p - 1], prompt[p], 2)
        for sample in out.samples:
            ids = prompt + sample.token_ids
            ref = reference_logprobs(model, ids)
            assert len(sample.logprobs) == len(sample.token_ids)
            for j, token in enumerate(sample.token_ids):  # raw distribution: before temperature and top-k
                assert_record(sample.logprobs[j], ref[len(prompt) + j - 1], token, 3)
    assert cached.samples[0].logprobs[0].top == cached.samples[1].logprobs[0].top  # shared template logits


def test_logprobs_are_off_by_default_and_validated(toy):
    out = toy.generate("Rate this:", SamplingParams(max_tokens=3))[0]
    assert out.samples[0].logprobs is None and out.prompt_logprobs is None
    zero = toy.generate("Rate this:", SamplingParams(max_tokens=3, logprobs=0, prompt_logprobs=0))[0]
    assert all(r.top == {} for r in zero.samples[0].logprobs) and zero.prompt_logprobs[1].top == {}
    for bad in (dict(logprobs=-1), dict(prompt_logprobs=1.5)):
        with pytest.raises(ValueError, match=next(iter(bad))):
            SamplingParams(**bad)


# ---- candidate strings --------------------------------------------------------------------------------
def test_candidate_logprobs_equal_summed_logprobs_of_a_full_forward_and_share_the_prompt(hf):
    from unicorn.engine.logprobs import expected_value

    model, path = hf
    engine = Engine(path, num_kv_blocks=256, block_size=4, max_num_batched_tokens=8)
    prompt = [1] + [30 + 7 * j % 200 for j in range(17)]
    candidates = [[5], [5, 9], [12, 13, 14], [200, 3], [7]]
    hits_before = engine.stats.prefix_hit_tokens
    scores = engine.candidate_logprobs(prompt, candidates)
    for cand, score in zip(candidates, scores):
        ref = reference_logprobs(model, prompt + cand)
        expect = sum(ref[len(prompt) + j - 1, t].item() for j, t in enumerate(cand))
        assert score == pytest.approx(expect, abs=1e-4)
    # Every candidate after the first reuses the prompt's full blocks (16 of its 18 tokens).
    assert engine.stats.prefix_hit_tokens - hits_before == (len(candidates) - 1) * 16
    assert not engine.scheduler.has_unfinished() and not engine._pending
    probs = [2.0 ** -1, 2.0 ** -2, 2.0 ** -2]
    assert expected_value([float(__import__("math").log(p)) for p in probs], [0, 4, 8]) == pytest.approx(3.0)


def test_candidate_strings_are_tokenized_alone_and_teacher_forced(toy):
    prompt = "Question: what"
    scores = toy.candidate_logprobs(prompt, [" circle", " red square", "."])
    ids = toy.prompts.text(prompt)[0]
    for cand, score in zip([" circle", " red square", "."], scores):
        c = toy.tokenizer.encode(cand, add_bos=False)
        out = toy.generate([ids + c], SamplingParams(max_tokens=1, prompt_logprobs=0))[0]
        assert score == pytest.approx(sum(r.logprob for r in out.prompt_logprobs[len(ids):]), abs=1e-5)
    with pytest.raises(ValueError, match="non-empty"):
        toy.candidate_logprobs(prompt, [""])


# ---- JSON schemas -------------------------------------------------------------------------------------
JUDGE = {"type": "object", "additionalProperties": False, "required": ["analysis", "score"], "properties": {
    "analysis": {"type": "string", "maxLength": 40}, "score": {"type": "integer", "minimum": 0, "maximum": 10}}}
PROPOSER = {"type": "object", "additionalProperties": False, "required": ["prompt", "category"], "properties": {
    "prompt": {"type": "string", "maxLength": 40}, "category": {"enum": ["counting", "color", "position"]}}}


def valid_judge(obj):
    return set(obj) == {"analysis", "score"} and isinstance(obj["analysis"], str) and len(obj["analysis"]) <= 40 \
        and isinstance(obj["score"], int) and 0 <= obj["score"] <= 10


def valid_proposer(obj):
    return set(obj) == {"prompt", "category"} and isinstance(obj["prompt"], str) and len(obj["prompt"]) <= 40 \
        and obj["category"] in ("counting", "color", "position")


def parses(text):
    import json

    try:
        return json.loads(text)
    except ValueError:
        return None


@pytest.mark.parametrize("schema, valid, prompt", [
    (JUDGE, valid_judge, "Rate this: a red circle above a square"),
    (PROPOSER, valid_proposer, "Propose a question"),
])
def test_json_schema_outputs_always_parse_and_validate(toy, schema, valid, prompt):
    pytest.importorskip("xgrammar")
    import json

    assert toy.kernels == "cpu"  # the engine's default sampler on CPU (the C++ op)
    for seed in (1, 2, 3):
        params = SamplingParams(n=3, temperature=1.0, max_tokens=160, seed=seed, logprobs=1)
        free = toy.generate(prompt, params)[0]
        assert all(parses(s.text) is None for s in free.samples)  # unconstrained, it would not parse
        schema_arg = schema if seed != 2 else json.dumps(schema)  # a dict or its JSON text
        out = toy.generate(prompt, SamplingParams(n=3, temperature=1.0, max_tokens=160, seed=seed, logprobs=1,
                                                  json_schema=schema_arg))[0]
        for sample in out.samples:
            assert sample.finish_reason == "stop", sample
            assert valid(parses(sample.text)), sample.text
            assert len(sample.logprobs) == len(sample.token_ids)  # logprobs ride along (raw distribution)


def test_json_schema_errors_name_the_field_and_the_package(toy, hf, monkeypatch):
    with pytest.raises(ValueError, match="json_schema"):
        SamplingParams(json_schema="{not json")
    out = Engine(hf[1], num_kv_blocks=64).generate([[1, 5]], SamplingParams(json_schema=JUDGE))[0]
    assert "json_schema" in out.error and "tokenizer" in out.error
    monkeypatch.setitem(__import__("sys").modules, "xgrammar", None)  # as if not installed
    out = toy.generate("Rate this:", SamplingParams(json_schema=JUDGE))[0]
    assert "xgrammar" in out.error and "unicorn-umm[structured]" in out.error


def test_json_schema_params_are_hashable_and_missing_eos_or_short_budget_are_reported(toy, monkeypatch):
    pytest.importorskip("xgrammar")
    import dataclasses
    import json

    as_dict, as_text = SamplingParams(json_schema=JUDGE), SamplingParams(json_schema=json.dumps(JUDGE))
    assert as_dict == as_text and hash(as_dict) == hash(as_text)
    with pytest.raises(ValueError, match="json_schema"):
        SamplingParams(json_schema={"type": {1, 2}})  # not writable as JSON
    short = toy.generate("Rate this:", SamplingParams(max_tokens=3, json_schema=JUDGE, seed=0))[0]
    assert short.finish_reason == "length" and short.text.startswith('{"') and parses(short.text) is None
    monkeypatch.setattr(toy, "spec", dataclasses.replace(toy.spec, eos_token_id=None))
    out = toy.generate("Rate this:", SamplingParams(json_schema=JUDGE))[0]
    assert "json_schema" in out.error and "eos_token_id" in out.error
