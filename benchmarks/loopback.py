"""Loopback servers of the benchmarks and tests: an OpenAI-compatible LLM and an image CDN on 127.0.0.1.

FakeLLMServer answers chat completions with scriptable replies, delays and faults; ImageServer serves
the files of one directory after a fixed latency. Both count the requests they answered.
"""

from __future__ import annotations

import json
import os
import socket
import threading
import urllib.parse
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Callable, List, Optional, Union

Responder = Callable[[List[dict]], Union[str, int]]  # an int is answered as that HTTP status

# Phrases that open each v1 template (conf/prompts/v1/*.txt): how a scripted server tells the steps apart.
STEP_MARKERS = {
    "summarise": "Write one product description",
    "evaluate": "Evaluate the candidate description",
    "refine": "Rewrite the candidate description",
}

# Phrases that only one conf/prompts/small template holds (its instructions follow its data blocks).
SMALL_STEP_MARKERS = {
    "evaluate": "Answer yes or no.",
    "refine": "Describe this product again",
    "summarise": "Describe this product for",
}


def step_of(messages: List[dict]) -> str:
    """Which agent step a conversation is, from its last user message."""
    user = [m["content"] for m in messages if m.get("role") == "user"][-1]
    for step, marker in STEP_MARKERS.items():
        if user.startswith(marker):
            return step
    for step, marker in SMALL_STEP_MARKERS.items():
        if marker in user:
            return step
    raise AssertionError(f"unknown step for prompt {user[:80]!r}")


def answer_each_step(messages: List[dict]) -> str:
    """A well-behaved LLM: a plain description for summarise and refine, a passing verdict for evaluate."""
    if step_of(messages) == "evaluate":
        return json.dumps({"pass": True, "missing": [], "reasons": []})
    return "A plain product photographed on a white background, described for the catalogue search."


def free_closed_port() -> int:
    """A loopback port that nothing listens on (bound, then closed)."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


class LoopbackServer:
    """A ThreadingHTTPServer on 127.0.0.1 (a free port) in a daemon thread, while used as a context.

    Subclasses give `_handler_class()` and call `_arrive()` (holding `_lock`) and `_leave()` around each
    request: `max_in_flight` is the most requests waiting or being answered at once.
    """

    def __init__(self):
        self.in_flight = 0
        self.max_in_flight = 0
        self._lock = threading.Lock()
        self._stop = threading.Event()
        self._httpd = ThreadingHTTPServer(("127.0.0.1", 0), self._handler_class())
        self._httpd.daemon_threads = True
        self._httpd.block_on_close = False
        self._thread = threading.Thread(
            target=self._httpd.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True
        )

    @property
    def host_port(self) -> str:
        return f"127.0.0.1:{self._httpd.server_address[1]}"

    def __enter__(self):
        self._thread.start()
        return self

    def __exit__(self, *exc) -> None:
        self._stop.set()
        self._httpd.shutdown()
        self._httpd.server_close()

    def reset_peak(self) -> None:
        """Start counting max_in_flight afresh (between the runs a benchmark compares)."""
        with self._lock:
            self.max_in_flight = self.in_flight

    def _arrive(self) -> None:
        self.in_flight += 1
        self.max_in_flight = max(self.max_in_flight, self.in_flight)

    def _leave(self) -> None:
        with self._lock:
            self.in_flight -= 1

    def _handler_class(self):
        raise NotImplementedError


class FakeLLMServer(LoopbackServer):
    """Serves POST /v1/chat/completions in a thread.

    mode: "ok" (responder's text), "slow" (sleep `delay_s` first, then ok), "fail_first" (HTTP
    `status` for the first `fail_count` requests, then ok), "status" (always HTTP `status`),
    "invalid_json" (200 with a non-JSON body), "no_choices" (200 with {"choices": []}), "drip" (an ok
    reply sent one byte every `delay_s`: each read is quick, the whole reply is not), "drip_headers"
    (the same, from the status line on).
    `delay_s` also applies in "ok" mode, so tests can observe how many requests overlap.
    """

    def __init__(
        self,
        responder: Optional[Responder] = None,
        mode: str = "ok",
        status: int = 500,
        fail_count: int = 1,
        delay_s: float = 0.0,
    ):
        self.responder = responder or (lambda messages: "A plain product description.")
        self.mode, self.status, self.fail_count, self.delay_s = mode, status, fail_count, delay_s
        self.requests: List[dict] = []
        self.auth_headers: List[Optional[str]] = []
        super().__init__()

    @property
    def base_url(self) -> str:
        return f"http://{self.host_port}/v1"

    def steps(self) -> List[str]:
        return [step_of(r["messages"]) for r in self.requests]

    def counts(self) -> dict:
        with self._lock:
            return {"requests": len(self.requests), "max_in_flight": self.max_in_flight}

    def _record(self, body: dict, auth: Optional[str]) -> int:
        with self._lock:
            self.requests.append(body)
            self.auth_headers.append(auth)
            self._arrive()
            return len(self.requests)

    def _answer(self, number: int, body: dict):
        """(status, body bytes) for request number `number` (1-based)."""
        if self.mode == "slow" or (self.delay_s and self.mode != "drip"):
            self._stop.wait(self.delay_s)
        if self.mode == "status" or (self.mode == "fail_first" and number <= self.fail_count):
            return self.status, json.dumps({"error": {"message": "scripted failure"}}).encode()
        if self.mode == "invalid_json":
            return 200, b"<html>not json</html>"
        if self.mode == "no_choices":
            return 200, json.dumps({"choices": []}).encode()
        content = self.responder(body["messages"])
        if isinstance(content, int):
            return content, json.dumps({"error": {"message": "scripted status"}}).encode()
        reply = {
            "id": f"cmpl-{number}",
            "object": "chat.completion",
            "model": body.get("model"),
            "choices": [
                {"index": 0, "message": {"role": "assistant", "content": content}, "finish_reason": "stop"}
            ],
        }
        return 200, json.dumps(reply).encode()

    def _drip(self, wfile, payload: bytes) -> None:
        for i in range(len(payload)):
            if self._stop.wait(self.delay_s):
                return
            wfile.write(payload[i:i + 1])
            wfile.flush()

    def _handler_class(self):
        server = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self):  # noqa: N802 - http.server naming
                body = json.loads(self.rfile.read(int(self.headers.get("Content-Length", 0))))
                number = server._record(body, self.headers.get("Authorization"))
                try:
                    status, payload = server._answer(number, body)
                finally:
                    server._leave()
                if server.mode == "drip_headers":
                    head = f"HTTP/1.0 200 OK\r\nContent-Length: {len(payload)}\r\n" + "X-Pad: x\r\n" * 50
                    try:
                        server._drip(self.wfile, head.encode() + b"\r\n" + payload)
                    except OSError:
                        pass
                    return
                self.send_response(status)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(payload)))
                self.end_headers()
                try:
                    if server.mode == "drip":
                        server._drip(self.wfile, payload)
                    else:
                        self.wfile.write(payload)
                except OSError:
                    pass  # the client gave up (timeout test)

            def log_message(self, *args):
                pass

        return Handler


class ImageServer(LoopbackServer):
    """Serves GET /<path> with the files under `root` after `delay_s`, in a thread (a CDN's latency).

    Paths are resolved under `root` (anything else is 404). `requests` counts every GET, `served` the
    files sent.
    """

    def __init__(self, root: str, delay_s: float = 0.0):
        self.root, self.delay_s = os.path.realpath(root), delay_s
        self.requests = self.served = 0
        super().__init__()

    def url_of(self, path: str) -> str:
        """The URL this server answers with the file `path` (which must lie under root)."""
        rel = os.path.relpath(os.path.realpath(path), self.root)
        return f"http://{self.host_port}/" + urllib.parse.quote(rel.replace(os.sep, "/"))

    def counts(self) -> dict:
        with self._lock:
            return {"requests": self.requests, "served": self.served, "max_in_flight": self.max_in_flight}

    def _file_of(self, url_path: str) -> Optional[str]:
        rel = urllib.parse.unquote(urllib.parse.urlsplit(url_path).path).lstrip("/")
        path = os.path.realpath(os.path.join(self.root, rel))
        inside = os.path.commonpath([path, self.root]) == self.root
        return path if inside and os.path.isfile(path) else None

    def _enter(self) -> None:
        with self._lock:
            self.requests += 1
            self._arrive()

    def _done(self, served: bool) -> None:
        with self._lock:
            self.served += int(served)
        self._leave()

    def _handler_class(self):
        server = self

        class Handler(BaseHTTPRequestHandler):
            def do_GET(self):  # noqa: N802 - http.server naming
                server._enter()
                path = None
                try:
                    server._stop.wait(server.delay_s)
                    path = server._file_of(self.path)
                    if path is None:
                        self.send_error(404)
                        return
                    with open(path, "rb") as fh:
                        payload = fh.read()
                    self.send_response(200)
                    self.send_header("Content-Type", "application/octet-stream")
                    self.send_header("Content-Length", str(len(payload)))
                    self.end_headers()
                    self.wfile.write(payload)
                except OSError:
                    pass  # the client went away
                finally:
                    server._done(path is not None)

            def log_message(self, *args):
                pass

        return Handler
