"""HTTP proxies for the upstream client: parsing, and the ``HTTPS_PROXY`` / ``HTTP_PROXY`` / ``NO_PROXY``
environment convention (as curl, requests and httpx read it).

A :class:`Proxy` is an ``http://[user:password@]host[:port]`` URL, parsed once. Its credentials are
kept for the ``Proxy-Authorization`` header only: ``str()``/``repr()`` and every error name the
proxy as ``host:port``, never with its user or password.

:func:`environment_proxies` reads the variables once (a driver calls it at startup, never per
request) into an :class:`EnvironmentProxies`, whose :meth:`~EnvironmentProxies.for_url` picks the
proxy for an upstream URL: ``https://`` upstreams use ``HTTPS_PROXY``, ``http://`` ones
``HTTP_PROXY`` (the lower-case names win when both are set), unless ``NO_PROXY`` matches the host
(``*``; a host name, also matching its subdomains, with or without a leading dot; an IP address or
CIDR block; each optionally with ``:port``).
"""

from __future__ import annotations

import base64
import ipaddress
from collections.abc import Mapping
from urllib.parse import unquote, urlsplit

__all__ = ["EnvironmentProxies", "Proxy", "ProxyURLError", "environment_proxies"]


class ProxyURLError(ValueError):
    """A proxy URL that cannot be used (the message never repeats its credentials)."""


class Proxy:
    """A parsed ``http://`` proxy URL (credentials hidden from ``str()``, ``repr()`` and errors)."""

    __slots__ = ("authorization", "host", "port")

    def __init__(self, url: str) -> None:
        text = url.strip()
        if "://" not in text:
            text = "http://" + text  # "proxy:3128", as curl and requests read it
        try:
            parts = urlsplit(text)
            host, port = parts.hostname, parts.port
        except ValueError:
            raise ProxyURLError("the proxy URL is malformed (expected http://host:port)") from None
        if parts.scheme != "http":
            raise ProxyURLError(
                f"proxy scheme {parts.scheme!r} is not supported (use an http:// proxy; https upstreams are tunnelled "
                f"through it with CONNECT)"
            )
        if not host:
            raise ProxyURLError("the proxy URL has no host (expected http://host:port)")
        if parts.path not in ("", "/") or parts.query or parts.fragment:
            raise ProxyURLError(f"the proxy URL for {host} must not have a path or query")
        self.host = host
        self.port = port or 80
        #: the ``Proxy-Authorization`` header value, or ``None`` without credentials
        self.authorization: str | None = None
        if parts.username is not None:
            userinfo = f"{unquote(parts.username)}:{unquote(parts.password or '')}"
            self.authorization = "Basic " + base64.b64encode(userinfo.encode()).decode("ascii")

    @property
    def address(self) -> str:
        """``host:port`` (safe to log)."""
        host = f"[{self.host}]" if ":" in self.host else self.host
        return f"{host}:{self.port}"

    def __repr__(self) -> str:
        return f"Proxy({self.address!r})"

    __str__ = __repr__

    def __eq__(self, other: object) -> bool:
        return (isinstance(other, Proxy) and (self.host, self.port, self.authorization)
                == (other.host, other.port, other.authorization))

    def __hash__(self) -> int:
        return hash((self.host, self.port))


class _NoProxyRule:
    __slots__ = ("domain", "network", "port")

    def __init__(self, entry: str) -> None:
        self.port: int | None = None
        self.network: ipaddress.IPv4Network | ipaddress.IPv6Network | None = None
        self.domain = ""
        text = entry.strip().lower()
        if text.startswith("[") and "]" in text:  # [::1]:8080
            host, _, rest = text[1:].partition("]")
            if rest.startswith(":") and rest[1:].isdigit():
                self.port = int(rest[1:])
            text = host
        elif text.count(":") == 1:
            host, _, port = text.partition(":")
            if port.isdigit():
                text, self.port = host, int(port)
        try:
            self.network = ipaddress.ip_network(text, strict=False)
        except ValueError:
            self.domain = text.lstrip(".").removeprefix("*.")

    def matches(self, host: str, port: int) -> bool:
        if self.port is not None and self.port != port:
            return False
        if self.network is not None:
            try:
                return ipaddress.ip_address(host) in self.network
            except ValueError:
                return False
        return bool(self.domain) and (host == self.domain or host.endswith("." + self.domain))


class EnvironmentProxies:
    """The proxy variables of one environment, read once (see the module docstring)."""

    __slots__ = ("_all", "_http", "_https", "_rules")

    def __init__(self, env: Mapping[str, str]) -> None:
        def read(name: str) -> str:
            return (env.get(name.lower()) or env.get(name.upper()) or "").strip()

        self._http = self._parse(read("HTTP_PROXY"), "HTTP_PROXY")
        self._https = self._parse(read("HTTPS_PROXY"), "HTTPS_PROXY")
        no_proxy = read("NO_PROXY")
        self._all = no_proxy == "*"
        self._rules = [_NoProxyRule(e) for e in no_proxy.split(",") if e.strip()] if not self._all else []

    @staticmethod
    def _parse(value: str, name: str) -> Proxy | None:
        if not value:
            return None
        try:
            return Proxy(value)
        except ProxyURLError as exc:
            raise ProxyURLError(f"{name}: {exc}") from None

    def bypassed(self, host: str, port: int) -> bool:
        """Whether ``NO_PROXY`` exempts ``host:port``."""
        if self._all:
            return True
        host = host.lower().strip("[]")
        return any(rule.matches(host, port) for rule in self._rules)

    def for_url(self, url: str) -> Proxy | None:
        """The proxy an upstream at ``url`` goes through, or ``None`` (direct)."""
        parts = urlsplit(url)
        tls = parts.scheme == "https"
        proxy = self._https if tls else self._http
        if proxy is None or not parts.hostname:
            return None
        if self.bypassed(parts.hostname, parts.port or (443 if tls else 80)):
            return None
        return proxy


def environment_proxies(env: Mapping[str, str]) -> EnvironmentProxies:
    """Read the proxy variables of ``env`` (e.g. ``os.environ``) once."""
    return EnvironmentProxies(env)
