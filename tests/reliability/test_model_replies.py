"""Malformed model replies never break a build: the server, pointed (--llm-url) at a loopback
chat endpoint that answers every request with the next of many malformed replies, still
builds, explains and recommends for every user, with the data's text where the model's
answer was unusable.
"""

from __future__ import annotations

import json
import threading
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import pytest
from interesttree.v1 import interest_pb2

from .embeddings import HashEmbeddings
from .processes import load_sample, start_server, user_checks
from .support import SAMPLE_USERS, Code, invoke

pytestmark = [pytest.mark.slow, pytest.mark.timeout(900)]


def _choice(message: object, finish: object = "stop") -> bytes:
    body = {"id": "x", "object": "chat.completion", "created": 0, "model": "fake"}
    body["choices"] = [{"index": 0, "message": message, "finish_reason": finish}]
    return json.dumps(body).encode()


def _content(text: object, finish: object = "stop") -> bytes:
    return _choice({"role": "assistant", "content": text}, finish)


# (HTTP status, Content-Type, body) of each reply, served round robin.
REPLIES: list[tuple[int, str, bytes]] = [
    (200, "application/json", b'{"choices": []}'),
    (200, "application/json", b"{}"),
    (200, "application/json", b"null"),
    (200, "application/json", b'{"choices": {"0": 1}}'),
    (200, "application/json", b"not json at all"),
    (200, "text/plain", b"plain text"),
    (200, "application/json", b""),
    (200, "application/json", _choice(None)),
    (200, "application/json", _choice("a string")),
    (200, "application/json", _content(123)),
    (200, "application/json", _content(["label"])),
    (200, "application/json", _content('{"label": "Sp')),
    (200, "application/json", _content('{"label": 5, "explanation": ["x"]}')),
    (200, "application/json", _content('{"label": "' + "a" * 1_000_000 + '"}')),
    (200, "application/json", _content("[" * 100_000)),
    (200, "application/json", _content('{"label": "\\u0000\\ud800", "explanation": "\\n"}')),
    (200, "application/json", _content('{"label": "Books"}', finish=["weird"])),
    (200, "application/json", _content('{"label": "Books"}', finish="length")),
    (200, "application/json", json.dumps({"choices": [{"message": {}}], "usage": "x"}).encode()),
    (500, "text/html", b"<html>overloaded</html>"),
    (400, "application/json", b'{"error": {"message": "bad"}}'),
]


class MalformedChat:
    """A loopback /v1/chat/completions that answers with REPLIES in turn."""

    def __init__(self) -> None:
        self.requests = 0
        self._lock = threading.Lock()
        chat = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:
                self.rfile.read(int(self.headers.get("Content-Length", "0")))
                with chat._lock:
                    status, kind, body = REPLIES[chat.requests % len(REPLIES)]
                    chat.requests += 1
                self.send_response(status)
                self.send_header("Content-Type", kind)
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

            def log_message(self, format: str, *args: Any) -> None:
                return

        self._http = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        threading.Thread(target=self._http.serve_forever, daemon=True).start()

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self._http.server_address[1]}/v1"

    def close(self) -> None:
        self._http.shutdown()
        self._http.server_close()


@pytest.fixture(scope="module")
def services() -> Iterator[tuple[MalformedChat, HashEmbeddings]]:
    chat, embeddings = MalformedChat(), HashEmbeddings()
    yield chat, embeddings
    chat.close()
    embeddings.close()


@pytest.mark.parametrize("mode", ["choose", "free"])
def test_malformed_model_replies_fall_back_to_the_data(
    services: tuple[MalformedChat, HashEmbeddings], tmp_path: Path, mode: str
) -> None:
    chat, embeddings = services
    args = ["--llm-url", chat.url, "--llm-model", "fake", "--naming-mode", mode]
    env = {**embeddings.env(), "INTEREST_TREE_LLM_TIMEOUT_S": "10"}
    server = start_server(tmp_path / "data", env=env, args=args, wait_serving=False)
    try:
        load_sample(server)
        asked = chat.requests
        problems: list[str] = []
        for _ in range(2):  # the second round meets other replies, and incremental builds
            problems += user_checks(server, SAMPLE_USERS)
        batch = invoke(
            server.channel,
            "/interesttree.v1.InterestService/BatchBuildInterestTrees",
            interest_pb2.BatchBuildInterestTreesRequest(all_users=True),
            interest_pb2.BatchBuildInterestTreesResponse,
            streaming=True,
            timeout=120,
        )
        if batch.code is not Code.OK or batch.problems:
            problems.append(f"BatchBuildInterestTrees -> {batch.describe()}")
        else:
            problems += [f"batch: {r.user} {r.error}" for r in batch.response if r.error]
        assert server.process.poll() is None, server.log_tail()
        assert chat.requests > asked, "the model was never asked"
        assert not problems, "\n".join(problems)
    finally:
        server.stop()
