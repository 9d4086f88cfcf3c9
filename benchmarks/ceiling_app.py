"""Reference ASGI apps that bound what a Python gateway on this stack can do (``run.py`` scenario ``ceiling``).

Served by the same uvicorn (httptools, uvloop) as Chorus, one worker, pinned like the gateways.
They do strictly less than Chorus, so each is an upper bound, not a competitor:

* ``CEILING_MODE=static``: answer every POST with a fixed ``chat.completion`` body; no upstream,
  no JSON work. The server stack alone (uvicorn's HTTP parsing, ASGI messages, two socket writes).
* ``CEILING_MODE=http1``: read the body, POST it unchanged to ``CEILING_UPSTREAM`` +
  ``/chat/completions`` with one :class:`chorus.http1.HTTPPool` set up like Chorus's ``openai``
  driver (same client, base URL, headers and pool size), read the whole answer and relay its bytes.
  A proxy with no authentication, no decoding, no pipeline.
* ``CEILING_MODE=aiohttp``: the same relay with one pooled :class:`aiohttp.ClientSession` (the
  client the driver used before ``chorus.http1``). Only when aiohttp is installed; Chorus no
  longer depends on it.

``CEILING_UPSTREAM`` is the API root (ending in ``/v1``), like a provider's ``base_url``;
``CEILING_API_KEY``, if set, is sent as ``authorization: Bearer …`` as the driver does.

    CEILING_MODE=http1 CEILING_UPSTREAM=http://127.0.0.1:9100/v1 \
        uvicorn benchmarks.ceiling_app:app --loop uvloop --http httptools --no-access-log --port 9200
"""

from __future__ import annotations

import json
import os
from typing import Any

MODE = os.environ.get("CEILING_MODE", "static")
UPSTREAM = os.environ.get("CEILING_UPSTREAM", "").rstrip("/")
API_KEY = os.environ.get("CEILING_API_KEY", "")
PATH = "/chat/completions"
BODY = json.dumps({
    "id": "chatcmpl-ceiling", "object": "chat.completion", "created": 0, "model": "gpt-4o-mini",
    "choices": [{"index": 0, "message": {"role": "assistant", "content": "Hello! This is a fixed reply."},
                 "finish_reason": "stop"}],
    "usage": {"prompt_tokens": 25, "completion_tokens": 8, "total_tokens": 33},
}, separators=(",", ":")).encode()
_client: Any = None  # the HTTPPool (``http1``) or ClientSession (``aiohttp``)


def _headers() -> dict[str, str]:
    """The headers the ``openai`` driver sends with every upstream request."""
    headers = {"content-type": "application/json", "accept": "application/json"}
    if API_KEY:
        headers["authorization"] = f"Bearer {API_KEY}"
    return headers


async def _start() -> None:
    global _client
    if MODE == "http1":
        from chorus.http1 import HTTPPool

        _client = HTTPPool(UPSTREAM, headers=_headers(), max_connections=512, timeout=600.0, connect_timeout=10.0)
    elif MODE == "aiohttp":
        import aiohttp

        _client = aiohttp.ClientSession(
            headers=_headers(),
            timeout=aiohttp.ClientTimeout(total=600, connect=10),
            connector=aiohttp.TCPConnector(limit=512, ttl_dns_cache=300),
            trust_env=False,
        )


async def _stop() -> None:
    if _client is None:
        return
    if MODE == "http1":
        await _client.aclose()
    else:
        await _client.close()


async def _relay(body: bytes) -> bytes:
    if MODE == "http1":
        response = await _client.request("POST", PATH, body)
        return await response.read()
    async with _client.post(UPSTREAM + PATH, data=body, allow_redirects=False) as response:
        return await response.read()


async def _read(receive: Any) -> bytes:
    parts = []
    while True:
        message = await receive()
        if message["type"] == "http.request":
            parts.append(message.get("body", b""))
            if not message.get("more_body", False):
                return b"".join(parts)
        elif message["type"] == "http.disconnect":
            return b""


async def app(scope: dict[str, Any], receive: Any, send: Any) -> None:
    if scope["type"] == "lifespan":
        while True:
            message = await receive()
            if message["type"] == "lifespan.startup":
                await _start()
                await send({"type": "lifespan.startup.complete"})
            elif message["type"] == "lifespan.shutdown":
                await _stop()
                await send({"type": "lifespan.shutdown.complete"})
                return
    if scope["type"] != "http":
        return
    body = await _read(receive)
    if scope["path"] == "/health":
        out = b'{"status":"ok"}'
    elif MODE in ("http1", "aiohttp"):
        out = await _relay(body)
    else:
        out = BODY
    await send({"type": "http.response.start", "status": 200,
                "headers": [(b"content-type", b"application/json"), (b"content-length", str(len(out)).encode())]})
    await send({"type": "http.response.body", "body": out})
