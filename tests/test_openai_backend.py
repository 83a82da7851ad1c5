"""Tests of the OpenAI-compatible backend against a real HTTP server on 127.0.0.1."""

import logging
import time

import pytest
from llm_server_helpers import FakeLLMServer, free_closed_port

from vlclip_core.config import ConfigError, LLMConfig
from vlclip_core.llm.openai_backend import (
    LLMConnectionError,
    LLMHTTPError,
    LLMResponseError,
    LLMTimeoutError,
    OpenAIChatBackend,
)

SECRET = "sk-test-7c1f0e9d-do-not-leak"


def _config(base_url: str, **kw) -> LLMConfig:
    values = dict(
        backend="openai",
        base_url=base_url,
        model="served-model",
        timeout_s=2.0,
        retries=2,
        backoff_s=0.05,
        max_concurrency=4,
    )
    values.update(kw)
    return LLMConfig(**values)


def _conv(text: str):
    return [{"role": "user", "content": text}]


def test_replies_in_order_and_payload():
    with FakeLLMServer(responder=lambda m: "echo " + m[-1]["content"]) as server:
        backend = OpenAIChatBackend(_config(server.base_url, max_new_tokens=33))
        replies = backend.chat([_conv(f"q{i}") for i in range(6)])
    assert replies == [f"echo q{i}" for i in range(6)]
    body = server.requests[0]
    assert body["model"] == "served-model"
    assert body["temperature"] == 0.0
    assert body["max_tokens"] == 33
    assert (body["frequency_penalty"], body["presence_penalty"], body["stop"]) == (0.5, 0.0, ["\n\n"])


def test_loop_controls_are_sent_from_config():
    config = dict(frequency_penalty=1.1, presence_penalty=0.3, stop=["\n", "Title:"])
    with FakeLLMServer(responder=lambda m: "ok") as server:
        OpenAIChatBackend(_config(server.base_url, **config)).chat([_conv("q")])
        OpenAIChatBackend(_config(server.base_url, stop=[])).chat([_conv("q")])
    sent, without_stop = server.requests
    assert (sent["frequency_penalty"], sent["presence_penalty"], sent["stop"]) == (1.1, 0.3, ["\n", "Title:"])
    assert "stop" not in without_stop


def test_concurrency_bound_observed_server_side():
    with FakeLLMServer(delay_s=0.2) as server:
        backend = OpenAIChatBackend(_config(server.base_url, max_concurrency=3))
        replies = backend.chat([_conv(str(i)) for i in range(9)])
    assert len(replies) == 9 and all(isinstance(r, str) for r in replies)
    assert server.max_in_flight == 3


def test_retries_500_then_succeeds():
    with FakeLLMServer(mode="fail_first", status=500, fail_count=2) as server:
        backend = OpenAIChatBackend(_config(server.base_url, retries=2))
        assert backend.complete(_conv("x")) == "A plain product description."
    assert len(server.requests) == 3


def test_429_is_retried():
    with FakeLLMServer(mode="fail_first", status=429, fail_count=1) as server:
        reply = OpenAIChatBackend(_config(server.base_url)).complete(_conv("x"))
    assert reply == "A plain product description."
    assert len(server.requests) == 2


def test_500_exhausts_retries():
    with FakeLLMServer(mode="status", status=503) as server:
        [reply] = OpenAIChatBackend(_config(server.base_url, retries=2)).chat([_conv("x")])
    assert isinstance(reply, LLMHTTPError) and reply.status == 503 and reply.kind == "HTTP 503"
    assert len(server.requests) == 3


@pytest.mark.parametrize("status", [400, 401])
def test_no_retry_on_client_error(status):
    with FakeLLMServer(mode="status", status=status) as server:
        with pytest.raises(LLMHTTPError) as info:
            OpenAIChatBackend(_config(server.base_url, retries=3)).complete(_conv("x"))
    assert info.value.status == status
    assert len(server.requests) == 1


def test_timeout_raises_within_bound():
    with FakeLLMServer(mode="slow", delay_s=5.0) as server:
        backend = OpenAIChatBackend(_config(server.base_url, timeout_s=0.3, retries=1, backoff_s=0.1))
        start = time.perf_counter()
        with pytest.raises(LLMTimeoutError):
            backend.complete(_conv("x"))
        elapsed = time.perf_counter() - start
    assert 0.6 <= elapsed < 0.3 * 2 + 0.1 + 0.8
    assert len(server.requests) == 2


def test_connection_refused_is_retried_then_reported():
    down_url = f"http://127.0.0.1:{free_closed_port()}/v1"
    backend = OpenAIChatBackend(_config(down_url, retries=2, backoff_s=0.01))
    [reply] = backend.chat([_conv("x")])
    assert isinstance(reply, LLMConnectionError) and reply.kind == "ConnectionError"


@pytest.mark.parametrize("mode", ["invalid_json", "no_choices"])
def test_bad_response_body_raises_specific_error(mode):
    with FakeLLMServer(mode=mode) as server:
        with pytest.raises(LLMResponseError):
            OpenAIChatBackend(_config(server.base_url)).complete(_conv("x"))
    assert len(server.requests) == 1


def test_one_failure_does_not_sink_the_batch():
    def responder(messages):
        return 400 if messages[-1]["content"] == "bad" else "fine"

    with FakeLLMServer(responder=responder) as server:
        backend = OpenAIChatBackend(_config(server.base_url, retries=0))
        replies = backend.chat([_conv("a"), _conv("bad"), _conv("b")])
    assert replies[0] == "fine" and replies[2] == "fine"
    assert isinstance(replies[1], LLMHTTPError) and replies[1].status == 400


def test_api_key_sent_as_bearer_never_logged_or_raised(monkeypatch, caplog):
    monkeypatch.setenv("VLCLIP_TEST_LLM_KEY", SECRET)
    caplog.set_level(logging.DEBUG)
    with FakeLLMServer(mode="fail_first", status=401, fail_count=1) as server:
        backend = OpenAIChatBackend(_config(server.base_url, api_key_env="VLCLIP_TEST_LLM_KEY"))
        [failed] = backend.chat([_conv("x")])
        [ok] = backend.chat([_conv("y")])
    assert server.auth_headers == [f"Bearer {SECRET}"] * 2
    assert ok == "A plain product description."
    assert isinstance(failed, LLMHTTPError) and failed.status == 401
    assert SECRET not in str(failed) and SECRET not in repr(failed) and SECRET not in failed.kind
    assert SECRET not in caplog.text
    down_url = f"http://127.0.0.1:{free_closed_port()}/v1"
    unreachable = OpenAIChatBackend(
        _config(down_url, retries=1, backoff_s=0.01, api_key_env="VLCLIP_TEST_LLM_KEY")
    )
    [down] = unreachable.chat([_conv("x")])
    assert SECRET not in str(down) and SECRET not in caplog.text


def test_missing_api_key_variable_is_a_config_error(monkeypatch):
    monkeypatch.delenv("VLCLIP_TEST_ABSENT_KEY", raising=False)
    with pytest.raises(ConfigError, match="VLCLIP_TEST_ABSENT_KEY"):
        OpenAIChatBackend(_config("http://127.0.0.1:9/v1", api_key_env="VLCLIP_TEST_ABSENT_KEY"))
