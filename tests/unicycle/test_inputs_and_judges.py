"""Bad input named by file, line and field; the OpenAI-compatible judge against a local server; unparsed verdicts
counted in the report; the answers-only scoring entry point."""
import json

import pytest

from unicorn.cli import main
from unicorn.unicycle.clients import OpenAIClient, chat_url
from unicorn.unicycle.judges import Item, LLMJudge, make_judge, parse_verdict
from unicorn.unicycle.schema import Question, SchemaError, load_answers, load_instances

GOOD = {"id": "p1", "category": "color", "prompt": "a red car", "questions": [
    {"id": "a", "type": "yesno", "question": "Is there a car?", "answer": "yes"},
    {"id": "b", "type": "mc", "question": "Colour of the car?", "options": ["red", "blue"], "answer": "red"},
    {"id": "c", "type": "text", "question": "What is written?", "answer": "stop now", "keywords": ["stop", "now"]}]}


def _write(path, lines):
    path.write_text("".join((l if isinstance(l, str) else json.dumps(l)) + "\n" for l in lines))
    return path


def test_loader_reads_good_lines(tmp_path):
    (inst,) = load_instances(_write(tmp_path / "d.jsonl", [GOOD, ""]))
    assert [q.type for q in inst.questions] == ["yesno", "mc", "text"] and inst.questions[2].keywords == ("stop", "now")


@pytest.mark.parametrize("line,message", [
    ('{"id": "p2", "category": ', "d.jsonl:2: malformed JSON"),
    ({**GOOD, "id": "p2", "questions": [{**GOOD["questions"][0], "type": "essay"}]},
     "d.jsonl:2 (question 'a'): unknown question type 'essay' (expected one of mc, yesno, open, text)"),
    ({**GOOD, "id": "p2", "questions": [{**GOOD["questions"][1], "answer": "green"}]},
     "d.jsonl:2 (question 'b'): field 'answer' 'green' is not one of the options"),
    ({**GOOD, "id": "p2", "questions": [{**GOOD["questions"][0], "answer": "maybe"}]}, "must be yes or no"),
    ({k: v for k, v in GOOD.items() if k != "prompt"} | {"id": "p2"}, "d.jsonl:2: missing field 'prompt'"),
    ({**GOOD, "id": "p2", "questions": []}, "d.jsonl:2: field 'questions' must be a non-empty list"),
    (GOOD, "d.jsonl:2: instance id 'p1' already used at line 1"),
    ("[1, 2]", "d.jsonl:2: an instance must be a JSON object"),
])
def test_bad_lines_name_file_line_and_field(tmp_path, line, message):
    path = _write(tmp_path / "d.jsonl", [GOOD, line])
    with pytest.raises(SchemaError) as err:
        load_instances(path)
    assert message in str(err.value) and "\n" not in str(err.value)


def test_cli_bad_input_is_one_line_exit_2(tmp_path, capsys):
    data = _write(tmp_path / "d.jsonl", [GOOD, {**GOOD, "id": "x", "questions": [{**GOOD["questions"][0], "type": "essay"}]}])
    answers = _write(tmp_path / "a.jsonl", [{"id": "p1", "answers": {"a": "yes"}}])
    assert main(["unicycle", "score", "--data", str(data), "--answers", str(answers), "--out", str(tmp_path / "o")]) == 2
    err = capsys.readouterr().err.strip()
    assert err.count("\n") == 0 and "d.jsonl:2" in err and "'essay'" in err
    bad_answers = _write(tmp_path / "b.jsonl", [{"id": "p1", "answers": ["yes"]}])
    with pytest.raises(SchemaError, match="b.jsonl:1: field 'answers' must map question ids to strings"):
        load_answers(bad_answers)
    with pytest.raises(ValueError, match="unknown judge 'oracle'"):
        make_judge("oracle")


def test_score_entry_point_by_hand(tmp_path):
    second = {**GOOD, "id": "p2", "category": "text"}
    data = _write(tmp_path / "d.jsonl", [GOOD, second])
    answers = _write(tmp_path / "a.jsonl", [{"id": "p1", "answers": {"a": "Yes.", "b": "(a)", "c": "STOP, now!"}},
                                            {"id": "p2", "answers": {"a": "no", "b": "red", "c": "stop"}}])
    out = tmp_path / "o"
    assert main(["unicycle", "score", "--data", str(data), "--answers", str(answers), "--out", str(out)]) == 0
    report = json.loads((out / "report.json").read_text())
    # p1: 1, 1, 1 -> Soft 1, Hard 1; p2: 0, 1, 0.5 -> Soft 0.5, Hard 0
    assert report["overall"]["soft"] == 75.0 and report["overall"]["hard"] == 50.0
    assert report["categories"]["text"]["soft"] == 50.0
    assert [q["score"] for q in report["instances"][1]["questions"]] == [0.0, 1.0, 0.5]
    assert "| **overall** | 2 | 6 | 75.0 | 50.0 | 0 |" in (out / "report.md").read_text()


def test_parse_verdict():
    assert parse_verdict("reasons... Verdict: correct") == 1.0
    assert parse_verdict("Verdict: **wrong**") == 0.0
    assert parse_verdict("verdict - incorrect") == 0.0
    assert parse_verdict("Verdict: correct\nVerdict: wrong") == 0.0  # the last one counts
    assert parse_verdict("The answer is correct.") is None and parse_verdict("") is None


def test_openai_judge_against_local_server(chat_server, monkeypatch):
    server, url = chat_server
    monkeypatch.setenv("OPENAI_API_KEY", "test-key")
    judge = make_judge(f"openai:{url}", openai_model="judge-x")
    q_yes = Question("a", "yesno", "Is there a car?", "yes")
    q_mc = Question("b", "mc", "Colour?", "red", ("red", "blue"))
    q_text = Question("c", "text", "Words?", "stop now", keywords=("stop", "now"))
    items = [Item("a red car", q_yes, "yes"), Item("a red car", q_mc, "blue"), Item("a red car", q_mc, "mumble"),
             Item("a red car", q_text, "stop")]
    verdicts = judge.judge(items)
    assert [v.score for v in verdicts] == [1.0, 0.0, None, 0.5]
    assert verdicts[2].reply == "I am not sure what to say." and not verdicts[2].parsed
    assert len(server.requests) == 3  # text questions are scored by the keyword rule, not asked
    body = server.requests[0]["body"]
    assert server.requests[0]["path"] == "/v1/chat/completions" and server.requests[0]["auth"] == "Bearer test-key"
    assert body["model"] == "judge-x" and body["temperature"] == 0
    asked = {r["body"]["messages"][0]["content"] for r in server.requests}
    assert any("Options: red, blue" in a and "prompt: a red car" in a for a in asked)


def test_openai_client_errors_are_one_line(chat_server):
    _, url = chat_server
    with pytest.raises(ValueError, match="HTTP 404"):
        OpenAIClient(url.replace("/v1", "/nope"), retries=0).complete(["x"])
    with pytest.raises(ValueError, match="must start with http"):
        OpenAIClient("127.0.0.1:1")
    assert chat_url("http://h/v1/") == "http://h/v1/chat/completions"
    assert chat_url("http://h/v1/chat/completions") == "http://h/v1/chat/completions"


def test_unparsed_verdicts_are_counted_in_the_report(chat_server, tmp_path):
    _, url = chat_server
    data = _write(tmp_path / "d.jsonl", [GOOD])
    answers = _write(tmp_path / "a.jsonl", [{"id": "p1", "answers": {"a": "mumble", "b": "red", "c": "stop now"}}])
    out = tmp_path / "o"
    assert main(["unicycle", "score", "--data", str(data), "--answers", str(answers), "--out", str(out),
                 "--judge", f"openai:{url}"]) == 0
    report = json.loads((out / "report.json").read_text())
    assert report["overall"]["unparsed"] == 1 and report["overall"]["hard"] == 0.0
    assert report["overall"]["soft"] == pytest.approx(100 * 2 / 3, abs=1e-3)
    assert report["instances"][0]["questions"][0]["parsed"] is False
    assert report["judge"].startswith("model:openai:")


class _Echo:
    name = "echo"

    def complete(self, prompts):
        return ["Verdict: correct" if "Answer given: ok" in p else "no idea" for p in prompts]


def test_llm_judge_with_any_client():
    q = Question("a", "open", "How many?", "2")
    verdicts = LLMJudge(_Echo()).judge([Item("p", q, "ok"), Item("p", q, "2")])
    assert [v.score for v in verdicts] == [1.0, None]


def test_plot_written_or_skipped_with_a_message(tmp_path, monkeypatch, capsys):
    import sys

    from unicorn.unicycle.report import plot

    report = {"set": "s", "overall": {"soft": 50.0, "hard": 25.0}, "categories": {"a": {"soft": 50.0, "hard": 25.0}}}
    monkeypatch.setitem(sys.modules, "matplotlib", None)  # as if not installed
    assert plot(report, tmp_path / "x.png") is False and not (tmp_path / "x.png").exists()
    assert "matplotlib is not installed: no plot" in capsys.readouterr().out
    monkeypatch.undo()
    pytest.importorskip("matplotlib")
    assert plot(report, tmp_path / "y.png") is True and (tmp_path / "y.png").read_bytes()[:4] == b"\x89PNG"
