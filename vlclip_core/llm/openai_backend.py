"""LLM backend for an OpenAI-compatible /v1/chat/completions endpoint (vLLM, TGI, Ollama), bounded retries."""

from __future__ import annotations

import json
import logging
import os
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from typing import List, Optional, Sequence, Union

import requests
import urllib3.exceptions

from vlclip_core.config import ConfigError, LLMConfig
from vlclip_core.llm.deadline import RequestDeadline, deadline_session
from vlclip_core.redact import redact_uri, scrub, url_secrets

log = logging.getLogger(__name__)

Conversation = Sequence[dict]
Reply = Union[str, Exception]


class LLMError(RuntimeError):
    """An LLM request failed; `kind` is a short, secret-free label for error rows."""

    kind = "LLMError"


class LLMTimeoutError(LLMError):
    kind = "Timeout"


class LLMConnectionError(LLMError):
    kind = "ConnectionError"


class LLMHTTPError(LLMError):
    def __init__(self, status: int, message: str):
        super().__init__(message)
        self.status = status
        self.kind = f"HTTP {status}"


class LLMResponseError(LLMError):
    """The endpoint answered 2xx but not with a chat completion (invalid JSON, no choices)."""

    kind = "InvalidResponse"


class LLMReplyTooLargeError(LLMResponseError):
    """The reply is longer than models.llm.max_reply_bytes; the rest of it is not read."""

    kind = "ReplyTooLarge"


_CHUNK = 64 * 1024


class OpenAIChatBackend:
    """Sends conversations to `<base_url>/chat/completions`, at most `max_concurrency` at a time.

    `chat(conversations)` returns one reply per conversation: its text, or the exception that ended
    it, so one failure does not sink the batch. Only transient failures (connection errors,
    timeouts, 429, 5xx) are retried, `retries` times with exponential backoff. Each attempt ends
    within `timeout_s` of wall-clock time however slowly the server answers (llm/deadline.py), and
    reads at most `max_reply_bytes`. Messages name the endpoint as `self.where`: without the URL's
    credentials and query string, and with the API key masked in anything the server sent back.
    """

    def __init__(self, config: LLMConfig):
        if not (config.base_url and config.model):
            raise ConfigError("models.llm.backend=openai needs models.llm.base_url and models.llm.model")
        self.config = config
        self.url = config.base_url.rstrip("/") + "/chat/completions"
        self.where = redact_uri(self.url)
        self._api_key = _read_api_key(config.api_key_env)
        self._secrets = url_secrets(self.url) + ((self._api_key,) if self._api_key else ())
        self._local = threading.local()
        self._pool = ThreadPoolExecutor(
            max_workers=max(1, config.max_concurrency), thread_name_prefix="vlclip-llm"
        )

    def chat(self, conversations: Sequence[Conversation]) -> List[Reply]:
        return list(self._pool.map(self._complete_safely, conversations))

    def close(self) -> None:
        self._pool.shutdown(wait=True)

    def _complete_safely(self, messages: Conversation) -> Reply:
        try:
            return self.complete(messages)
        except LLMError as err:
            return err

    def complete(self, messages: Conversation) -> str:
        """One chat completion with retries; raises an LLMError subclass on final failure."""
        retries = max(0, self.config.retries)
        for attempt in range(retries):
            try:
                return self._post_once(messages)
            except (LLMTimeoutError, LLMConnectionError, LLMHTTPError) as err:
                if not _is_transient(err):
                    raise
                delay = self.config.backoff_s * (2**attempt)
                log.info(
                    "LLM request failed (%s); retry %d/%d in %.2fs", err.kind, attempt + 1, retries, delay
                )
                time.sleep(delay)
        return self._post_once(messages)

    def _post_once(self, messages: Conversation) -> str:
        deadline = RequestDeadline(self.config.timeout_s)
        try:
            with deadline:
                status, body = self._exchange(messages, deadline)
        except (requests.RequestException, urllib3.exceptions.HTTPError, OSError) as err:
            if deadline.expired or isinstance(err, (requests.Timeout, urllib3.exceptions.TimeoutError)):
                raise self._timeout() from err
            raise LLMConnectionError(f"cannot reach {self.where}: {type(err).__name__}") from err
        if deadline.expired:
            raise self._timeout()
        if status >= 400:
            text = body[:200].decode("utf-8", "replace")
            raise LLMHTTPError(status, f"{self.where} answered HTTP {status}: {self._scrub(text)}")
        return _completion_text(body, status, self.where)

    def _exchange(self, messages: Conversation, deadline: RequestDeadline) -> tuple:
        """(status, body bytes) of one POST; the body read one socket read at a time, up to the cap."""
        limit = (self.config.timeout_s, self.config.timeout_s)
        with self._session().post(self.url, json=self._payload(messages), timeout=limit, stream=True) as resp:
            cap = self.config.max_reply_bytes
            too_large = f"{self.where} sent a reply over models.llm.max_reply_bytes={cap}"
            if _content_length(resp) > cap:
                raise LLMReplyTooLargeError(too_large)
            chunks, size = [], 0
            while not deadline.expired and (chunk := resp.raw.read1(_CHUNK, decode_content=True)):
                size += len(chunk)
                if size > cap:
                    raise LLMReplyTooLargeError(too_large)
                chunks.append(chunk)
            return resp.status_code, b"".join(chunks)

    def _timeout(self) -> LLMTimeoutError:
        return LLMTimeoutError(f"no complete answer from {self.where} within {self.config.timeout_s}s")

    def _payload(self, messages: Conversation) -> dict:
        return {
            "model": self.config.model,
            "messages": list(messages),
            "temperature": self.config.temperature,
            "max_tokens": self.config.max_new_tokens,
            "frequency_penalty": self.config.frequency_penalty,
            "presence_penalty": self.config.presence_penalty,
            **({"stop": list(self.config.stop)} if self.config.stop else {}),
        }

    def _session(self) -> requests.Session:
        session = getattr(self._local, "session", None)
        if session is None:
            session = deadline_session()
            if self._api_key:
                session.headers["Authorization"] = f"Bearer {self._api_key}"
            self._local.session = session
        return session

    def _scrub(self, text: str) -> str:
        return scrub(text, self._secrets)


def _read_api_key(env_name: Optional[str]) -> Optional[str]:
    if not env_name:
        return None
    key = os.environ.get(env_name)
    if not key:
        raise ConfigError(
            f"models.llm.api_key_env names {env_name!r}, but that environment variable is not set"
        )
    return key


def _is_transient(err: LLMError) -> bool:
    if isinstance(err, LLMHTTPError):
        return err.status == 429 or err.status >= 500
    return isinstance(err, (LLMTimeoutError, LLMConnectionError))


def _content_length(resp: requests.Response) -> int:
    try:
        return int(resp.headers.get("Content-Length") or 0)
    except ValueError:
        return 0


def _completion_text(body: bytes, status: int, where: str) -> str:
    try:
        parsed = json.loads(body)
    except (ValueError, RecursionError) as err:
        raise LLMResponseError(f"{where} answered HTTP {status} with a body that is not JSON") from err
    try:
        content = parsed["choices"][0]["message"]["content"]
    except (KeyError, IndexError, TypeError) as err:
        raise LLMResponseError(f"{where} answered without choices[0].message.content") from err
    if not isinstance(content, str):
        raise LLMResponseError(f"{where} answered with a non-text message content ({type(content).__name__})")
    return content
