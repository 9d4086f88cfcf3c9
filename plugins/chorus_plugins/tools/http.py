"""Built-in tool ``http``: one declarative HTTP action on a configured URL template.

::

    [[skillsets.tools]]
    name = "lookup_order"
    driver = "http"
    method = "GET"
    url = "https://api.example.com/orders/{order_id}"
    headers = { Authorization = "Bearer ${ORDERS_TOKEN}" }

``{name}`` placeholders in the URL's path and query are filled from the call's arguments,
percent-encoded; the scheme and host cannot be templated. Without ``query``/``body`` templates the
other arguments go to the query string (GET, DELETE, HEAD) or to a JSON body (POST, PUT, PATCH).
With templates only the templates are sent: a string that is exactly ``"{name}"`` becomes the
argument's value (any JSON type; its key is dropped when the argument is absent), other strings
get the text of the arguments. ``parameters`` (the JSON schema the model sees) defaults to one
string property per placeholder, those of the URL required.

Header values are treated as secrets: they never appear in results or errors, any header value
(or word of one) of 8 characters or more is redacted from the response the model sees, and headers
are not sent on a redirect to another origin. The result is ``{"status", "body"}`` with ``body``
decoded JSON when the response is JSON, else text, capped at ``max_response_bytes`` (then
``"truncated": true`` and a marker); a non-2xx status is a :class:`~chorus.tools.ToolError`.
"""

from __future__ import annotations

import asyncio
import re
import time
from typing import Any
from urllib.parse import quote

import httpx
import msgspec

from chorus.egress import EgressPolicy, read_capped
from chorus.secrets import Secret
from chorus.tools import ToolContext, ToolDriver, ToolError, ToolSettings, ToolSpec

_PLACEHOLDER = re.compile(r"\{([A-Za-z_][A-Za-z0-9_]*)\}")
_METHODS = frozenset({"GET", "HEAD", "DELETE", "POST", "PUT", "PATCH"})
_QUERY_METHODS = frozenset({"GET", "HEAD", "DELETE"})
_MIN_SECRET = 8
_EXCERPT = 300
_MISSING = object()


class HttpToolSettings(ToolSettings, kw_only=True):
    """``driver = "http"`` keys (see the module docstring)."""

    url: str
    method: str = "GET"
    headers: dict[str, Secret] = {}
    query: dict[str, Any] | None = None
    body: Any = None
    parameters: dict[str, Any] | None = None
    timeout: float = 30.0
    max_response_bytes: int = 64 * 1024
    max_redirects: int = 5

    def __post_init__(self) -> None:
        if self.method.upper() not in _METHODS:
            raise ValueError(f"method must be one of {', '.join(sorted(_METHODS))}, not {self.method!r}")
        scheme, sep, rest = self.url.partition("://")
        if not sep or scheme.lower() not in ("http", "https"):
            raise ValueError(f"url must start with http:// or https://, got {self.url!r}")
        authority = re.split(r"[/?#]", rest, maxsplit=1)[0]
        if not authority or "{" in authority or "}" in authority:
            raise ValueError("url: the host and port cannot contain placeholders")
        if self.timeout <= 0 or self.max_response_bytes < 1 or self.max_redirects < 0:
            raise ValueError("timeout and max_response_bytes must be positive, max_redirects not negative")
        if self.parameters is not None and self.parameters.get("type") != "object":
            raise ValueError('parameters must be a JSON schema with "type" = "object"')
        for key, value in self.headers.items():
            if any(c in key + value.get() for c in "\r\n\0"):
                raise ValueError(f"headers.{key}: header names and values cannot contain line breaks")


class HttpTool(ToolDriver):
    """One configured HTTP endpoint exposed as one tool."""

    settings_type = HttpToolSettings
    settings: HttpToolSettings

    def __init__(self, settings: ToolSettings, egress: EgressPolicy) -> None:
        super().__init__(settings, egress)
        s = self.settings
        self._method = s.method.upper()
        self._path_names = _names(s.url)
        template_names = [n for part in (s.query, s.body) for n in _names(part)]
        self._templated = s.query is not None or s.body is not None
        if s.parameters is not None:
            self._schema = s.parameters
        else:
            names = list(dict.fromkeys([*self._path_names, *template_names]))
            self._schema = {
                "type": "object",
                "properties": {n: {"type": "string"} for n in names},
                "required": list(dict.fromkeys(self._path_names)),
            }
        self._required = [str(n) for n in self._schema.get("required", [])]
        self._secrets = _secret_texts(v.get() for v in s.headers.values())

    def tools(self) -> list[ToolSpec]:
        s = self.settings
        description = s.description or f"Call the {s.name} HTTP API."
        return [ToolSpec(name=s.name, description=description, parameters=self._schema)]

    async def call(self, name: str, arguments: dict[str, Any], ctx: ToolContext) -> Any:
        """Send the request; return ``{"status", "body"[, "truncated"]}`` or raise :class:`ToolError`."""
        if not isinstance(arguments, dict):
            raise ToolError("arguments must be a JSON object")
        missing = [k for k in self._required if arguments.get(k) is None]
        if missing:
            raise ToolError(f"missing required argument(s): {', '.join(missing)}")
        url = _PLACEHOLDER.sub(lambda m: _path_value(m.group(1), arguments), self.settings.url)
        params, body = self._payload(arguments)
        budget = min(self.settings.timeout, ctx.deadline - time.monotonic())
        if budget <= 0:
            raise ToolError("no time left to call the API")
        try:
            async with asyncio.timeout(budget):
                response = await self._send(ctx.http, url, params, body, budget)
                data, truncated = await read_capped(response, self.settings.max_response_bytes)
        except TimeoutError:
            raise ToolError(f"the API did not answer within {budget:.3g} s") from None
        except httpx.InvalidURL:
            raise ToolError("the arguments do not make a valid URL") from None
        except httpx.TooManyRedirects:
            raise ToolError("the API redirected too many times") from None
        except httpx.TimeoutException:
            raise ToolError(f"the API did not answer within {budget:.3g} s") from None
        except httpx.HTTPError as exc:
            raise ToolError(f"the request failed ({type(exc).__name__})") from None
        return self._result(response, data, truncated)

    def _payload(self, arguments: dict[str, Any]) -> tuple[dict[str, Any] | None, Any]:
        s = self.settings
        if self._templated:
            params = None
            if s.query is not None:
                rendered = _render(s.query, arguments)
                params = {k: _query_value(v) for k, v in rendered.items() if v is not None}
            body = None if s.body is None else _render(s.body, arguments)
            return params, body
        rest = {k: v for k, v in arguments.items() if k not in self._path_names and v is not None}
        if self._method in _QUERY_METHODS:
            return {k: _query_value(v) for k, v in rest.items()}, None
        return None, rest or None

    async def _send(
        self, client: httpx.AsyncClient, url: str, params: dict[str, Any] | None, body: Any, budget: float
    ) -> httpx.Response:
        """Send, following redirects by hand so headers never reach another origin."""
        method, headers = self._method, {k: v.get() for k, v in self.settings.headers.items()}
        timeout = httpx.Timeout(budget)
        request = client.build_request(method, url, params=params, json=body, headers=headers, timeout=timeout)
        for _ in range(self.settings.max_redirects):
            response = await client.send(request, stream=True, follow_redirects=False)
            if not response.has_redirect_location:
                return response
            await response.aclose()
            target = request.url.join(response.headers["location"])
            if (target.scheme, target.host, target.port) != (request.url.scheme, request.url.host, request.url.port):
                headers = {}
            if response.status_code == 303 or (response.status_code in (301, 302) and method == "POST"):
                method, body = "GET", None
            request = client.build_request(method, target, json=body, headers=headers, timeout=timeout)
        response = await client.send(request, stream=True, follow_redirects=False)
        if response.has_redirect_location:
            await response.aclose()
            raise httpx.TooManyRedirects("too many redirects", request=request)
        return response

    def _result(self, response: httpx.Response, data: bytes, truncated: bool) -> dict[str, Any]:
        text = _redact(_decode_text(data, response.charset_encoding), self._secrets)
        status = response.status_code
        if not 200 <= status < 300:
            excerpt = " ".join(text.split())[:_EXCERPT]
            reason = response.reason_phrase or ""
            raise ToolError(f"the API answered HTTP {status} {reason}".rstrip() + (f": {excerpt}" if excerpt else ""))
        result: dict[str, Any] = {"status": status}
        media = response.headers.get("content-type", "").split(";")[0].strip().lower()
        if not truncated and (media == "application/json" or media.endswith("+json")):
            try:
                result["body"] = _redact(msgspec.json.decode(data), self._secrets)
                return result
            except msgspec.DecodeError:
                pass
        if truncated:
            text += f"\n[truncated: the response exceeded {self.settings.max_response_bytes} bytes]"
            result["truncated"] = True
        result["body"] = text
        return result


def _names(template: Any) -> list[str]:
    """Placeholder names in a string or a JSON template, in order."""
    if isinstance(template, str):
        return _PLACEHOLDER.findall(template)
    if isinstance(template, dict):
        return [n for v in template.values() for n in _names(v)]
    if isinstance(template, list):
        return [n for v in template for n in _names(v)]
    return []


def _text(name: str, value: Any) -> str:
    if value is None:
        raise ToolError(f"missing argument: {name}")
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, (str, int, float)):
        return str(value)
    raise ToolError(f"argument {name} must be a string or a number")


def _path_value(name: str, arguments: dict[str, Any]) -> str:
    text = _text(name, arguments.get(name))
    if text in ("", ".", ".."):
        raise ToolError(f"argument {name} cannot be {text!r}")
    return quote(text, safe="")


def _render(template: Any, arguments: dict[str, Any]) -> Any:
    """Fill a JSON template: ``"{name}"`` alone takes the value, placeholders in text take its text."""
    if isinstance(template, str):
        whole = _PLACEHOLDER.fullmatch(template)
        if whole:
            return arguments.get(whole.group(1), _MISSING)
        return _PLACEHOLDER.sub(lambda m: _text(m.group(1), arguments.get(m.group(1))), template)
    if isinstance(template, dict):
        items = ((k, _render(v, arguments)) for k, v in template.items())
        return {k: v for k, v in items if v is not _MISSING}
    if isinstance(template, list):
        return [v for v in (_render(v, arguments) for v in template) if v is not _MISSING]
    return template


def _query_value(value: Any) -> Any:
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, (str, int, float)):
        return str(value)
    if isinstance(value, list) and all(isinstance(v, (str, int, float)) for v in value):
        return [_query_value(v) for v in value]
    return msgspec.json.encode(value).decode()


def _secret_texts(values: Any) -> tuple[str, ...]:
    found: set[str] = set()
    for value in values:
        for text in (value, *value.split()):
            if len(text) >= _MIN_SECRET:
                found.add(text)
    return tuple(sorted(found, key=len, reverse=True))


def _redact(value: Any, secrets: tuple[str, ...]) -> Any:
    """``value`` with every secret text replaced, in strings and object keys alike."""
    if not secrets:
        return value
    if isinstance(value, str):
        for secret in secrets:
            value = value.replace(secret, "[redacted]")
        return value
    if isinstance(value, dict):
        return {_redact(k, secrets): _redact(v, secrets) for k, v in value.items()}
    if isinstance(value, list):
        return [_redact(v, secrets) for v in value]
    return value


def _decode_text(data: bytes, charset: str | None) -> str:
    try:
        return data.decode(charset or "utf-8", errors="replace")
    except LookupError:
        return data.decode("utf-8", errors="replace")
