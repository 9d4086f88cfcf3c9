"""Reference ASGI apps that bound what a Python gateway on this stack can do (``run.py`` scenario ``ceiling``).

Served by the same uvicorn (httptools, uvloop) as Chorus, one worker, pinned like the gateways.
They do strictly less than Chorus, so each is an upper bound, not a competitor:

* ``CEILING_MODE=static``: answer every POST with a fixed ``chat.completion`` body; no upstream,
  no JSON work. The server stack alone (uvicorn's HTTP parsing, ASGI messages, two socket writes).
* ``CEILING_MODE=aiohttp``: read the body, POST it unchanged to ``CEILING_UPSTREAM`` with one
  pooled :class:`aiohttp.ClientSession` (the client Chorus's ``openai`` driver uses, same settings),
  relay the upstream bytes. A proxy with no authentication, no decoding, no pipeline.

    CEILING_MODE=aiohttp CEILING_UPSTREAM=http://127.0.0.1:9100/v1/chat/completions \
        uvicorn benchmarks.ceiling_app:app --loop uvloop --http httptools --no-access-log --port 9200
"""

from __future__ import annotations

import json
import os
from typing import Any

MODE = os.environ.get("CEILING_MODE", "static")
UPSTREAM = os.environ.get("CEILING_UPSTREAM", "")
BODY = json.dumps({
    "id": "chatcmpl-ceiling", "object": "chat.completion", "created": 0, "model": "gpt-4o-mini",
    "choices": [{"index": 0, "message": {"role": "assistant", "content": "Hello! This is a fixed reply."},
                 "finish_reason": "stop"}],
    "usage": {"prompt_tokens": 25, "completion_tokens": 8, "total_tokens": 33},
}, separators=(",", ":")).encode()
_session: Any = None


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
    global _session
    if scope["type"] == "lifespan":
        while True:
            message = await receive()
            if message["type"] == "lifespan.startup":
                if MODE == "aiohttp":
                    import aiohttp

                    _session = aiohttp.ClientSession(
                        headers={"content-type": "application/json", "accept": "application/json"},
                        timeout=aiohttp.ClientTimeout(total=600, connect=10),
                        connector=aiohttp.TCPConnector(limit=512, ttl_dns_cache=300),
                        trust_env=False,
                    )
                await send({"type": "lifespan.startup.complete"})
            elif message["type"] == "lifespan.shutdown":
                if _session is not None:
                    await _session.close()
                await send({"type": "lifespan.shutdown.complete"})
                return
    if scope["type"] != "http":
        return
    body = await _read(receive)
    if scope["path"] == "/health":
        out = b'{"status":"ok"}'
    elif MODE == "aiohttp":
        async with _session.post(UPSTREAM, data=body, allow_redirects=False) as response:
            out = await response.read()
    else:
        out = BODY
    await send({"type": "http.response.start", "status": 200,
                "headers": [(b"content-type", b"application/json"), (b"content-length", str(len(out)).encode())]})
    await send({"type": "http.response.body", "body": out})
