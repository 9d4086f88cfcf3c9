"""The py-spy profile analysis: self and inclusive shares per function and package of collapsed
stacks (``analyse_collapsed``), and which layer of the gateway a sampled stack is in (``LAYERS``)."""

from __future__ import annotations

import re
from typing import Any

IDLE_LEAVES = ("_worker (concurrent/futures/thread.py", "wait (threading.py", "get (queue.py", "select (selectors.py")


def analyse_collapsed(text: str, top: int = 15) -> dict[str, Any]:
    """Self and inclusive sample shares per function and per package from py-spy ``--format raw``.

    Stacks whose leaf is an idle wait in a helper thread (a thread-pool worker blocked on its queue,
    which py-spy can misreport as active) are left out and counted in ``idle_samples``.
    """
    total = 0
    idle = 0
    self_fn: dict[str, int] = {}
    incl_fn: dict[str, int] = {}
    incl_pkg: dict[str, int] = {}
    for line in text.splitlines():
        stack, _, count = line.rpartition(" ")
        if not stack or not count.isdigit():
            continue
        n = int(count)
        total += n
        frames = [f for f in stack.split(";") if f]
        if not frames:
            continue
        if frames[-1].startswith(IDLE_LEAVES):
            idle += n
            total -= n
            continue
        self_fn[frames[-1]] = self_fn.get(frames[-1], 0) + n
        seen_fn, seen_pkg = set(), set()
        for frame in frames:
            if frame not in seen_fn:
                seen_fn.add(frame)
                incl_fn[frame] = incl_fn.get(frame, 0) + n
            pkg = package_of(frame)
            if pkg not in seen_pkg:
                seen_pkg.add(pkg)
                incl_pkg[pkg] = incl_pkg.get(pkg, 0) + n
    # self time per package (the leaf frame's package)
    self_pkg: dict[str, int] = {}
    for frame, n in self_fn.items():
        pkg = package_of(frame)
        self_pkg[pkg] = self_pkg.get(pkg, 0) + n

    def share(d: dict[str, int]) -> list[tuple[str, float]]:
        return [(k, round(100.0 * v / total, 1)) for k, v in sorted(d.items(), key=lambda kv: -kv[1])[:top]]

    layers: dict[str, int] = {}
    for line in text.splitlines():
        stack, _, count = line.rpartition(" ")
        if not stack or not count.isdigit():
            continue
        frames = [f for f in stack.split(";") if f]
        if not frames or frames[-1].startswith(IDLE_LEAVES):
            continue
        name = layer_of(frames)
        layers[name] = layers.get(name, 0) + int(count)
    return {"samples": total, "idle_samples": idle, "self_by_package": share(self_pkg), "inclusive_by_package": share(incl_pkg),
            "self_by_function": share(self_fn), "inclusive_by_function": share(incl_fn),
            "layers": [(k, round(100.0 * v / total, 1)) for k, v in sorted(layers.items(), key=lambda kv: -kv[1])]}


# Where a sample's time goes: the leaf-most frame that matches a rule decides (first rule wins).
LAYERS: tuple[tuple[str, tuple[str, ...]], ...] = (
    # chorus/http1.py comes first and, being leaf-most, wins over the driver/pipeline/handler frames above it;
    # matched without the "(" so a full path (…/core/chorus/http1.py:123) counts too. aiohttp: older runs.
    ("upstream HTTP client (chorus.http1: request, pool, response parsing, its socket I/O)",
     ("chorus/http1.py:", "(aiohttp/", "(yarl/", "(multidict/")),
    ("socket writes to the client (uvicorn `send`: response head and body)", ("RequestResponseCycle.send ",)),
    ("request parsing and task start (uvicorn + httptools)", ("HttpToolsProtocol.", "RequestResponseCycle.receive ")),
    ("provider driver (encode the upstream body, decode the answer or each SSE event)", ("openai_provider.py", "(chorus/sse.py")),
    ("hooks: pluggy/HookRunner calls, plugin code, tasks for async hooks",
     ("HookRunner.", "(pluggy/", "(chorus_plugins/", "Pipeline._gather", "Pipeline._post_process")),
    ("pipeline (resolve, layering, agent loop, chunk rewrite, encode for the client)",
     ("Pipeline.", "(chorus/pipeline.py", "(chorus/layering.py", "(chorus/turns.py", "(chorus/legacy.py")),
    ("request handler (auth, body, decode, context, request id, disconnect watch, relay)",
     ("(chorus/api/", "(chorus/requestid.py", "(chorus/context.py", "(chorus/schemas.py", "(chorus/keys.py",
      "(chorus/registry.py", "(chorus/targets.py")),
    ("Litestar (routing, exception middleware, before_send wrapper)", ("(litestar/",)),
    ("uvicorn ASGI glue (proxy headers, run_asgi)", ("RequestResponseCycle.run_asgi ", "ProxyHeadersMiddleware.")),
)


def layer_of(frames: list[str]) -> str:
    """The layer of one sampled stack (``LAYERS``); the event loop itself when nothing matches."""
    for frame in reversed(frames):
        for name, needles in LAYERS:
            if any(n in frame for n in needles):
                return name
    return "event loop and task switching (uvloop, asyncio)"


PACKAGES = ("aiohttp", "yarl", "multidict", "propcache", "httpx", "httpcore", "h11", "anyio", "litestar", "uvicorn", "httptools",
            "msgspec", "pluggy", "chorus_plugins", "chorus", "asyncio", "uvloop", "logging", "json", "ssl", "secrets",
            "typing", "multidict", "contextlib", "email", "urllib", "http", "selectors", "socket", "concurrent", "threading",
            "idna", "certifi")


def package_of(frame: str) -> str:
    """The package of a py-spy frame like ``send (httpx/_client.py:1629)``."""
    m = re.search(r"\(([^()]*?):\d+\)$", frame)
    path = m.group(1) if m else frame
    path = path.replace("\\", "/")
    if "site-packages/" in path:
        rest = path.split("site-packages/", 1)[1]
        return rest.split("/", 1)[0].removesuffix(".py")
    for marker in ("core/chorus/", "plugins/chorus_plugins/"):
        if marker in path:
            return marker.split("/")[1]
    parts = path.split("/")
    for pkg in PACKAGES:
        if pkg in parts or f"{pkg}.py" in parts:
            return pkg
    return parts[-1].removesuffix(".py") if parts else "?"

