"""Tests of the three-step enrichment agent against a scripted OpenAI-compatible server on 127.0.0.1."""

import json

import pytest
from llm_server_helpers import FakeLLMServer, free_closed_port, step_of

from vlclip_core.config import ConfigError, LLMConfig
from vlclip_core.errors import ItemError
from vlclip_core.llm.agent import (
    EnrichmentAgent,
    clean_text,
    dedupe_keywords,
    fallback_text,
    parse_evaluation,
    truncate_words,
)
from vlclip_core.llm.openai_backend import OpenAIChatBackend
from vlclip_core.llm.prompts import load_prompts

ITEM = {
    "title": "Nike Air Zoom Running Shoe | Nike Air Zoom Running Shoe | red red",
    "description": "<p>Lightweight mesh upper.</p> Breathable. Free shipping on all orders!",
    "product_type": "running shoe",
    "attributes": {"colour": "red", "size": "10"},
}
GOOD = "A red Nike Air Zoom running shoe in size 10 with a lightweight, breathable mesh upper."
BETTER = "Red Nike Air Zoom running shoe, size 10, with a lightweight breathable mesh upper for daily runs."
PASS = json.dumps({"pass": True, "missing": [], "reasons": []})
FALLBACK = "Nike Air Zoom Running Shoe, red. colour: red; size: 10. Lightweight mesh upper. Breathable."


def scripted(**replies):
    """A responder answering each step with a fixed text (or a list consumed in order)."""

    def respond(messages):
        reply = replies[step_of(messages)]
        return reply.pop(0) if isinstance(reply, list) else reply

    return respond


def _config(base_url, **kw):
    values = dict(backend="openai", base_url=base_url, model="m", timeout_s=2.0, retries=0, backoff_s=0.01)
    values.update(kw)
    return LLMConfig(**values)


def _enrich(server, items, **kw):
    config = _config(server.base_url, **kw)
    return EnrichmentAgent(OpenAIChatBackend(config), config).enrich(items)


def test_pass_on_first_evaluation_is_ok_with_two_calls():
    with FakeLLMServer(scripted(summarise=GOOD, evaluate=PASS)) as server:
        [result] = _enrich(server, [ITEM])
    assert (result.text, result.status, result.reason, result.n_calls) == (GOOD, "ok", None, 2)
    assert server.steps() == ["summarise", "evaluate"]


def test_failed_evaluation_is_refined():
    verdict = json.dumps({"pass": False, "missing": [], "reasons": ["too generic"]})
    with FakeLLMServer(scripted(summarise=GOOD, evaluate=verdict, refine=BETTER)) as server:
        [result] = _enrich(server, [ITEM])
    assert (result.text, result.status, result.reason, result.n_calls) == (
        BETTER,
        "refined",
        "evaluation_failed: too generic",
        3,
    )
    assert server.steps() == ["summarise", "evaluate", "refine"]
    refine_prompt = server.requests[2]["messages"][-1]["content"]
    assert "Problems: too generic" in refine_prompt and GOOD in refine_prompt


def test_second_round_evaluates_the_refinement():
    verdicts = [json.dumps({"pass": False, "missing": ["size 10"], "reasons": []}), PASS]
    with FakeLLMServer(scripted(summarise=GOOD, evaluate=verdicts, refine=BETTER)) as server:
        [result] = _enrich(server, [ITEM], max_rounds=2)
    assert (result.text, result.status, result.n_calls) == (BETTER, "refined", 4)
    assert server.steps() == ["summarise", "evaluate", "refine", "evaluate"]


def test_output_missing_an_attribute_falls_back_naming_it():
    no_colour = "A Nike Air Zoom running shoe in size 10 with a lightweight mesh upper."
    with FakeLLMServer(scripted(summarise=no_colour, evaluate=PASS, refine=no_colour)) as server:
        [result] = _enrich(server, [ITEM])
    assert (result.text, result.status, result.reason, result.n_calls) == (
        FALLBACK,
        "fallback",
        "missing_attributes: colour=red",
        3,
    )
    refine_prompt = server.requests[2]["messages"][-1]["content"]
    assert "Missing: colour=red" in refine_prompt


def test_garbage_evaluation_is_treated_as_failure():
    with FakeLLMServer(scripted(summarise=GOOD, evaluate="Looks great to me!!", refine=BETTER)) as server:
        [result] = _enrich(server, [ITEM])
    assert (result.text, result.status, result.reason, result.n_calls) == (
        BETTER,
        "refined",
        "evaluation_unparsable",
        3,
    )


def test_too_short_output_falls_back():
    with FakeLLMServer(scripted(summarise="red 10", evaluate=PASS, refine="red 10")) as server:
        [result] = _enrich(server, [ITEM], min_chars=20)
    assert (result.status, result.reason, result.text) == ("fallback", "too_short", FALLBACK)


def test_endpoint_down_falls_back_with_llm_error():
    config = _config(f"http://127.0.0.1:{free_closed_port()}/v1")
    [result] = EnrichmentAgent(OpenAIChatBackend(config), config).enrich([ITEM])
    assert (result.text, result.status, result.reason, result.n_calls) == (
        FALLBACK,
        "fallback",
        "llm_error: ConnectionError",
        1,
    )


def test_on_error_error_returns_item_error():
    with FakeLLMServer(scripted(summarise=GOOD, evaluate=503)) as server:
        [outcome] = _enrich(server, [ITEM], on_error="error")
    assert isinstance(outcome, ItemError)
    assert outcome.error_type == "llm_error" and outcome.message.startswith("evaluate step: HTTP 503")


def test_batch_goes_through_each_step_together():
    items = [dict(ITEM, title=f"{ITEM['title']} {i}") for i in range(3)]
    with FakeLLMServer(scripted(summarise=GOOD, evaluate=PASS)) as server:
        results = _enrich(server, items, max_concurrency=3)
    assert [r.status for r in results] == ["ok"] * 3
    assert server.steps() == ["summarise"] * 3 + ["evaluate"] * 3


def test_one_failing_item_does_not_change_its_neighbours():
    def respond(messages):
        if step_of(messages) == "evaluate" and "Broken" in messages[-1]["content"]:
            return 400
        return GOOD if step_of(messages) == "summarise" else PASS

    items = [ITEM, dict(ITEM, title="Broken shoe"), ITEM]
    with FakeLLMServer(respond) as server:
        results = _enrich(server, items)
    assert [r.status for r in results] == ["ok", "fallback", "ok"]
    assert results[1].reason == "llm_error: HTTP 400" and results[1].n_calls == 2


def test_input_is_cleaned_and_truncated_before_prompting():
    item = dict(ITEM, description="<b>Soft</b> &amp; warm\x00 knit. " + "filler " * 2000)
    with FakeLLMServer(scripted(summarise=GOOD, evaluate=PASS)) as server:
        _enrich(server, [item], max_input_chars=400)
    prompt = server.requests[0]["messages"][-1]["content"]
    description = prompt.split("Description: ", 1)[1].split("\n", 1)[0]
    assert description.startswith("Soft & warm knit. filler")
    assert "<b>" not in prompt and "\x00" not in prompt
    assert len(description) <= 400


def test_parse_evaluation_takes_the_whole_reply_only():
    verdict = parse_evaluation('```json\n{"pass": false, "missing": ["size"], "reasons": ["vague"]}\n```')
    assert (verdict.passed, verdict.missing, verdict.reasons) == (False, ["size"], ["vague"])
    assert verdict.parsed
    assert not parse_evaluation('Sure! {"pass": true, "missing": []} Hope it helps').parsed
    assert not parse_evaluation('{not json} {"ok": 1}').parsed
    assert not parse_evaluation("").parsed


def test_text_helpers():
    assert clean_text("  <p>Red&nbsp;dress</p>\t\n\u200b size   M ") == "Red dress size M"
    assert clean_text("size < 5 and > 2") == "size < 5 and > 2"
    # every ASCII control character is a space, in plain-ASCII text as in text with other characters
    ascii_text = "".join(map(chr, range(128)))
    assert clean_text(ascii_text) == clean_text(ascii_text + "\u00e9")[:-2]
    assert clean_text("a\x00b\x1fc\x7fd\te") == "a b c d e"
    assert dedupe_keywords("Dress | dress | Red Red Dress, summer") == "Dress, Red Dress, summer"
    assert truncate_words("alpha beta gamma delta", 12) == "alpha beta"
    fields = {"title": "Lamp", "product_type": "desk lamp", "description": "Bright. Dimmable. Metal."}
    text = fallback_text(fields, {"colour": "black"}, 600)
    assert text == "Lamp. desk lamp. colour: black. Bright. Dimmable."


def test_missing_prompt_file_names_it(tmp_path):
    (tmp_path / "v9").mkdir()
    (tmp_path / "v9" / "summarise.txt").write_text("Write {title}")
    with pytest.raises(ConfigError, match=r"v9/evaluate\.txt"):
        load_prompts(LLMConfig(prompt_dir=str(tmp_path), prompt_version="v9"))


def test_unknown_placeholder_is_rejected(tmp_path):
    version = tmp_path / "v2"
    version.mkdir()
    for step in ("summarise", "evaluate", "refine"):
        (version / f"{step}.txt").write_text("Use {title} and {colour}")
    with pytest.raises(ConfigError, match=r"\{colour\}"):
        load_prompts(LLMConfig(prompt_dir=str(tmp_path), prompt_version="v2"))


def test_v1_prompts_render_with_system_message():
    prompts = load_prompts(LLMConfig())
    messages = prompts.messages(
        "evaluate", title="T", description="D", product_type="P", attributes="a: b", summary="S"
    )
    assert [m["role"] for m in messages] == ["system", "user"]
    assert "Title: T" in messages[1]["content"] and '{"pass": true or false' in messages[1]["content"]


ECHO = "Catalog data: Title: Nike Air Zoom Running Shoe, red, size 10. Product type: running shoe."
LOOP = "A red running shoe in size 10, a red running shoe in size 10, a red running shoe in size 10."


def test_a_passing_verdict_cannot_accept_an_echo_and_refine_hears_why():
    with FakeLLMServer(scripted(summarise=ECHO, evaluate=PASS, refine=GOOD)) as server:
        [result] = _enrich(server, [ITEM])
    echo = "prompt_echo: repeats the prompt label Catalog data:"
    record = 'field_list: 3 "name: value" fields, not prose'
    reason = f"{echo}; {record}"
    assert (result.text, result.status, result.reason, result.n_calls) == (GOOD, "refined", reason, 3)
    assert result.checks == (echo, record)
    assert f"Problems: {reason}" in server.requests[2]["messages"][-1]["content"]


def test_a_loop_that_survives_refinement_falls_back():
    with FakeLLMServer(scripted(summarise=LOOP, evaluate=PASS, refine=LOOP)) as server:
        [result] = _enrich(server, [ITEM])
    assert (result.text, result.status, result.n_calls) == (FALLBACK, "fallback", 3)
    assert result.reason == 'repetition: "a red running" 3 times'
    assert result.checks == ('repetition: "a red running" 3 times',) * 2
