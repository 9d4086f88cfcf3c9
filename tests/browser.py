"""A headless Chromium driven over the Chrome DevTools Protocol, for the playground's browser tests.

Only the system's Chromium is needed (Debian: ``apt-get install chromium``; ``$CHORUS_CHROMIUM``
names another binary). No WebDriver and no browser download: the browser is started with
``--remote-debugging-port=0``, the port it picked is read from ``DevToolsActivePort`` in its
profile, and one page target is driven through ``websockets``' synchronous client (a Chorus
dependency already, through uvicorn). The protocol methods used here (``Page.navigate``,
``Runtime.evaluate``, ``Input.*``, ``Emulation.setDeviceMetricsOverride``,
``Page.captureScreenshot``) have been stable for years, so any recent Chromium works.

Keys and text go through ``Input.dispatchKeyEvent`` / ``Input.insertText``, so the page sees real
keyboard events. Every JavaScript exception, console error and browser log error (a
Content-Security-Policy violation, a failed load) is collected in :attr:`Browser.errors`.
"""

from __future__ import annotations

import base64
import contextlib
import itertools
import json
import os
import shutil
import signal
import subprocess
import tempfile
import time
import urllib.request
from pathlib import Path
from typing import Any

from websockets.sync.client import ClientConnection, connect

CHROMIUM_ENV = "CHORUS_CHROMIUM"
SKIP_REASON = ("no Chromium found (install Debian's `chromium` package: apt-get install -y chromium; "
               f"or set ${CHROMIUM_ENV} to a Chromium binary)")

# key name -> (code, Windows virtual key code, text the key types)
_KEYS = {"Enter": ("Enter", 13, "\r"), "Escape": ("Escape", 27, ""), "Tab": ("Tab", 9, "")}
SHIFT = 8


def find_chromium() -> str | None:
    """``$CHORUS_CHROMIUM``, else ``chromium`` / ``chromium-browser`` on ``PATH``."""
    configured = os.environ.get(CHROMIUM_ENV)
    if configured:
        return configured if Path(configured).is_file() else None
    return shutil.which("chromium") or shutil.which("chromium-browser")


class Browser:
    """One headless Chromium with one page; use as a context manager."""

    def __init__(self, executable: str, *, width: int = 1280, height: int = 860, start_timeout: float = 30.0) -> None:
        self.profile = Path(tempfile.mkdtemp(prefix="chorus-chromium-"))
        self.errors: list[str] = []
        self._ids = itertools.count(1)
        self._stack = contextlib.ExitStack()  # the websocket (websockets wants connect() entered as a context)
        self._log = (self.profile / "chromium.log").open("wb")
        self.process = subprocess.Popen(
            [executable, "--headless=new", "--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage",
             "--no-first-run", "--no-default-browser-check", "--disable-extensions", "--disable-sync",
             "--disable-background-networking", "--disable-component-update", "--mute-audio",
             "--remote-debugging-address=127.0.0.1", "--remote-debugging-port=0",
             f"--user-data-dir={self.profile}", f"--window-size={width},{height}", "about:blank"],
            stdin=subprocess.DEVNULL, stdout=self._log, stderr=subprocess.STDOUT, start_new_session=True,
        )
        try:
            self._ws = self._attach(start_timeout)
            for domain in ("Page", "Runtime", "Log"):
                self.call(f"{domain}.enable")
            self.viewport(width, height)
        except BaseException:
            self.close()
            raise

    def _attach(self, timeout: float) -> ClientConnection:
        marker = self.profile / "DevToolsActivePort"
        deadline = time.monotonic() + timeout
        while not (marker.is_file() and marker.read_text().strip()):
            if self.process.poll() is not None or time.monotonic() > deadline:
                raise RuntimeError(f"Chromium did not start: {self.output()[-2000:]}")
            time.sleep(0.05)
        port = int(marker.read_text().splitlines()[0])
        with urllib.request.urlopen(f"http://127.0.0.1:{port}/json/list", timeout=10) as response:
            targets = json.load(response)
        page = next(t for t in targets if t.get("type") == "page")
        return self._stack.enter_context(connect(page["webSocketDebuggerUrl"], max_size=None, open_timeout=10))

    def output(self) -> str:
        """What the browser process printed (its log file)."""
        self._log.flush()
        return (self.profile / "chromium.log").read_text(errors="replace")

    # -- the protocol ----------------------------------------------------------------------------

    def call(self, method: str, **params: Any) -> dict[str, Any]:
        """Send one command and return its result; events that arrive meanwhile are inspected."""
        ident = next(self._ids)
        self._ws.send(json.dumps({"id": ident, "method": method, "params": params}))
        while True:
            message = json.loads(self._ws.recv(timeout=60))
            if message.get("id") == ident:
                if "error" in message:
                    raise RuntimeError(f"{method}: {message['error']}")
                result: dict[str, Any] = message.get("result", {})
                return result
            self._event(message)

    def _event(self, message: dict[str, Any]) -> None:
        method, params = message.get("method"), message.get("params", {})
        if method == "Runtime.exceptionThrown":
            details = params.get("exceptionDetails", {})
            self.errors.append("exception: " + str(details.get("exception", {}).get("description") or details.get("text")))
        elif method == "Runtime.consoleAPICalled" and params.get("type") in ("error", "assert"):
            self.errors.append("console: " + " ".join(str(a.get("value", a.get("description"))) for a in params.get("args", [])))
        elif method == "Log.entryAdded" and params.get("entry", {}).get("level") == "error":
            entry = params["entry"]
            self.errors.append(f"log[{entry.get('source')}]: {entry.get('text')} {entry.get('url') or ''}".strip())

    def evaluate(self, expression: str) -> Any:
        """The value of a JavaScript expression in the page (promises are awaited)."""
        result = self.call("Runtime.evaluate", expression=expression, returnByValue=True, awaitPromise=True)
        if "exceptionDetails" in result:
            raise RuntimeError(f"{expression!r} threw: {result['exceptionDetails']}")
        return result.get("result", {}).get("value")

    def wait_for(self, expression: str, *, timeout: float = 20.0, what: str = "") -> Any:
        """Poll ``expression`` until it is truthy; its value. Fails after ``timeout`` (a hang guard only)."""
        deadline = time.monotonic() + timeout
        while True:
            value = self.evaluate(expression)
            if value:
                return value
            if time.monotonic() > deadline:
                status = self.evaluate("document.getElementById('status')?.textContent")
                raise AssertionError(f"timed out waiting for {what or expression}; page status: {status!r}")
            time.sleep(0.05)

    # -- what a person does ----------------------------------------------------------------------

    def goto(self, url: str) -> None:
        self.call("Page.navigate", url=url)
        self.wait_for("document.readyState === 'complete' && document.body?.dataset.ready === 'true'",
                      what=f"{url} to load")

    def reload(self) -> None:
        self.call("Page.reload", ignoreCache=True)
        time.sleep(0.1)
        self.wait_for("document.readyState === 'complete' && document.body?.dataset.ready === 'true'", what="reload")

    def click(self, selector: str) -> None:
        """A real mouse click in the middle of the element."""
        box = self.evaluate(
            f"(() => {{ const e = document.querySelector({json.dumps(selector)}); e.scrollIntoView({{block: 'center'}});"
            " const r = e.getBoundingClientRect(); return {x: r.x + r.width / 2, y: r.y + r.height / 2}; })()")
        for kind in ("mousePressed", "mouseReleased"):
            self.call("Input.dispatchMouseEvent", type=kind, x=box["x"], y=box["y"], button="left", clickCount=1)

    def type(self, text: str) -> None:
        """Type text into the focused element."""
        self.call("Input.insertText", text=text)

    def press(self, key: str, modifiers: int = 0) -> None:
        """Press and release a key (``Enter``, ``Escape``, ``Tab``); ``modifiers=SHIFT`` for Shift."""
        code, vk, text = _KEYS[key]
        down: dict[str, Any] = {"key": key, "code": code, "windowsVirtualKeyCode": vk, "nativeVirtualKeyCode": vk,
                                "modifiers": modifiers}
        if text:
            down.update(text=text, unmodifiedText=text)
        self.call("Input.dispatchKeyEvent", type="keyDown", **down)
        self.call("Input.dispatchKeyEvent", type="keyUp", key=key, code=code, windowsVirtualKeyCode=vk,
                  nativeVirtualKeyCode=vk, modifiers=modifiers)

    def viewport(self, width: int, height: int, *, mobile: bool = False, scale: float = 1.0) -> None:
        self.call("Emulation.setDeviceMetricsOverride", width=width, height=height, deviceScaleFactor=scale,
                  mobile=mobile)

    def screenshot(self, path: str | os.PathLike[str], *, full_page: bool = False) -> Path:
        """Save a PNG of the page (the viewport, or the whole page)."""
        params: dict[str, Any] = {"format": "png"}
        if full_page:
            size = self.evaluate("({w: document.documentElement.scrollWidth, h: document.documentElement.scrollHeight})")
            params.update(captureBeyondViewport=True, clip={"x": 0, "y": 0, "width": size["w"], "height": size["h"],
                                                             "scale": 1})
        data = self.call("Page.captureScreenshot", **params)["data"]
        target = Path(path)
        target.parent.mkdir(parents=True, exist_ok=True)
        target.write_bytes(base64.b64decode(data))
        return target

    # -- teardown --------------------------------------------------------------------------------

    def close(self) -> None:
        """Close the browser (politely, then by signal to its own process group) and remove its profile."""
        with contextlib.suppress(Exception):
            self._stack.close()
        if self.process.poll() is None:
            self.process.terminate()
            try:
                self.process.wait(timeout=10)
            except subprocess.TimeoutExpired:
                with contextlib.suppress(ProcessLookupError):
                    os.killpg(self.process.pid, signal.SIGKILL)
                self.process.wait(timeout=10)
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.killpg(self.process.pid, signal.SIGKILL)  # helper processes the browser left in its group
        self._log.close()
        shutil.rmtree(self.profile, ignore_errors=True)

    def __enter__(self) -> Browser:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()
