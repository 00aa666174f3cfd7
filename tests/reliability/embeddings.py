"""A loopback OpenAI-compatible /v1/embeddings endpoint that hashes words.

A server pointed at it (INTEREST_TREE_EMBEDDING_URL) starts in seconds, without loading
torch and all-MiniLM, so the tests that restart the server often stay quick.
"""

from __future__ import annotations

import hashlib
import json
import math
import re
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any


class HashEmbeddings:
    """A loopback /v1/embeddings endpoint: words hashed into a unit vector of `dim` values."""

    def __init__(self, dim: int = 64) -> None:
        self.dim = dim
        embed = self.embed

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:
                body = json.loads(self.rfile.read(int(self.headers["Content-Length"])))
                texts = body["input"] if isinstance(body["input"], list) else [body["input"]]
                data = [
                    {"object": "embedding", "index": i, "embedding": embed(str(text))}
                    for i, text in enumerate(texts)
                ]
                reply = {"object": "list", "data": data, "model": body.get("model", "hash")}
                reply["usage"] = {"prompt_tokens": 0, "total_tokens": 0}
                payload = json.dumps(reply).encode()
                self.send_response(200)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(payload)))
                self.end_headers()
                self.wfile.write(payload)

            def log_message(self, format: str, *args: Any) -> None:
                return

        self._http = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self._thread = threading.Thread(target=self._http.serve_forever, daemon=True)
        self._thread.start()

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self._http.server_address[1]}/v1"

    def embed(self, text: str) -> list[float]:
        vector = [0.0] * self.dim
        vector[0] = 0.1
        for word in re.findall(r"\w+", text.lower()):
            digest = int.from_bytes(hashlib.blake2b(word.encode(), digest_size=8).digest())
            vector[digest % self.dim] += 1.0 if digest >> 63 else -1.0
        norm = math.sqrt(sum(v * v for v in vector))
        return [v / norm for v in vector]

    def env(self) -> dict[str, str]:
        return {
            "INTEREST_TREE_EMBEDDING_URL": self.url,
            "INTEREST_TREE_EMBEDDING_MODEL": "hash",
            "INTEREST_TREE_EMBEDDING_DIM": str(self.dim),
        }

    def close(self) -> None:
        self._http.shutdown()
        self._http.server_close()
