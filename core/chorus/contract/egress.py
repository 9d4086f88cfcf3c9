"""The egress guard: where server-side tools may send HTTP requests.

Built on `ssrfguard <https://pypi.org/project/ssrfguard/>`_, which resolves a name once, validates
every answer against the IANA special-purpose registries (loopback, private, link-local, CGNAT,
multicast, reserved, and the IPv4 carried inside ``::ffff:0:0/96``, NAT64, 6to4 and Teredo) and
connects to the address it validated, so DNS rebinding cannot move a request after the check.
TLS SNI and certificate checks stay on the URL's host (httpcore's own TLS code runs unchanged).

On top of that, :class:`EgressPolicy` adds what a gateway needs:

* an operator allow-list (``egress_allow``) of IPs/CIDRs and host names (exact or ``*.suffix``);
* refusal by name, before any lookup, of ``localhost``, ``*.localhost``, private-use suffixes
  (``.local``, ``.internal`` — e.g. ``metadata.google.internal`` —, ``.home.arpa``, ...),
  metadata names, dotless names (they resolve through search domains into the local network) and
  inet_aton spellings such as ``0x7f.1`` or ``127.1``;
* ports other than 80/443 only for allow-listed destinations;
* a check of every request *httpx itself* parsed, redirect hops included, so no URL parser
  differential can route a request elsewhere than where it was checked.

Refusals raise :class:`EgressDenied` (a :class:`~chorus.tools.ToolError`, so the model reads it);
its message names the host and the rule, never the path or query of the URL.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Collection, Iterable, Sequence
from ipaddress import IPv4Network, IPv6Network, ip_address, ip_network
from typing import Any

import httpx
from ssrfguard import AddressTable, Policy, SSRFGuardError, Target, resolve
from ssrfguard.errors import BlockedAddressError, BlockedURLError
from ssrfguard.httpx import AsyncSafeTransport

from chorus.contract.errors import ToolError

__all__ = ["EgressDenied", "EgressPolicy", "Resolver", "read_capped"]

#: ``socket.getaddrinfo``'s shape; every address it returns is validated before use.
Resolver = Callable[..., Iterable[tuple[Any, ...]]]

_ALL_PORTS = frozenset(range(1, 65536))
_DEFAULT_PORTS = {"http": 80, "https": 443}
_NO_ADDRESSES = AddressTable(())

#: Names refused before any lookup: RFC 6761 ``localhost``, RFC 6762 ``local`` and its appendix G
#: private-use labels, ICANN's ``internal`` (2024), RFC 8375 ``home.arpa``, and cloud metadata.
_PRIVATE_SUFFIXES = (
    "localhost", "localdomain", "local", "internal", "intranet", "private", "corp", "home", "lan",
    "home.arpa", "metadata.goog",
)
_NUMERIC_LABEL = re.compile(r"^(?:0x[0-9a-f]*|[0-9]+)$")
_HOST_PATTERN = re.compile(r"^(\*\.)?(?:[a-z0-9_](?:[a-z0-9_-]{0,61}[a-z0-9_])?\.)*[a-z0-9_-]{1,63}$")
# Arguments of ``client()`` that configure a connection, not a request: they go to the transports.
_TRANSPORT_OPTIONS = frozenset({"verify", "cert", "http1", "http2", "limits", "retries", "local_address"})
# Arguments that would route requests around the guarded transport.
_REFUSED_OPTIONS = frozenset({"transport", "mounts", "proxy", "proxies", "app", "uds"})


class EgressDenied(ToolError):
    """An outbound request was refused by the egress guard (before any connection was made)."""


class EgressPolicy:
    """What a skillset's tools may reach.

    ``allow`` entries are IP addresses or CIDRs (v4 or v6) or host names, exact (case-insensitive,
    trailing dot ignored) or ``*.example.com`` (any subdomain, not the apex). An allow-listed name
    may resolve anywhere: the operator vouches for it. An IP/CIDR entry permits every address inside
    it, literal or resolved, but not the names refused by name (``localhost``, ``.internal``, ...):
    list such a name itself to use it. ``ports`` are the ports open to every destination (``None``:
    any); other ports need the URL's host itself on the allow-list (a listed name, or a literal
    address inside a listed network). ``resolver`` replaces ``socket.getaddrinfo``.

    Raises :class:`ValueError` naming the entry for an allow-list entry that is neither, or a CIDR
    inside a translation prefix (``64:ff9b::/96`` would permit every IPv4 address behind it).
    """

    def __init__(
        self,
        allow: Sequence[str] = (),
        *,
        ports: Collection[int] | None = (80, 443),
        resolver: Resolver | None = None,
        max_redirects: int = 5,
    ) -> None:
        if isinstance(allow, str):
            raise TypeError("allow must be a list of entries, not a string")
        self.allow = tuple(allow)
        self.ports = None if ports is None else frozenset(ports)
        self.max_redirects = max_redirects
        self._resolver = resolver
        networks: list[IPv4Network | IPv6Network] = []
        hosts: list[str] = []
        for entry in self.allow:
            network = _as_network(entry)
            if network is not None:
                networks.append(network)
            else:
                hosts.append(_as_host_pattern(entry))
        self._networks = tuple(networks)
        self._hosts = frozenset(hosts)
        # Syntax only (scheme, userinfo, control characters, host shape, encoded addresses).
        self._syntax = Policy(allowed_ports=_ALL_PORTS, denied_networks=_NO_ADDRESSES, max_redirects=max_redirects)
        try:
            # Every address is checked against the registry table, except allow-listed networks.
            self._strict = Policy(
                allowed_ports=_ALL_PORTS, allowed_networks=self._networks, max_redirects=max_redirects
            )
            # For allow-listed names only; its backend re-checks the name at connect time.
            self._named = (
                Policy(
                    allowed_ports=_ALL_PORTS, denied_networks=_NO_ADDRESSES, allowed_hosts=self._hosts,
                    max_redirects=max_redirects,
                )
                if self._hosts
                else None
            )
        except ValueError as exc:
            raise ValueError(f"egress_allow: {exc}") from None

    def __repr__(self) -> str:
        return f"EgressPolicy(allow={list(self.allow)!r})"

    def check_url(self, url: str) -> None:
        """Raise :class:`EgressDenied` unless ``url`` may be fetched; resolves names (blocking).

        Checks the URL as written and as httpx parses it, then resolves a host name (unless it is
        allow-listed) and validates every address. A name that does not resolve raises
        :class:`~chorus.tools.ToolError`. Requests made through :meth:`client` are checked anyway,
        at connect time; this is for early, explicit validation.
        """
        self._check_syntax(url)
        try:
            parsed = httpx.URL(url)
        except (httpx.InvalidURL, TypeError, ValueError) as exc:
            raise EgressDenied(f"egress denied: not a valid URL ({exc})") from None
        target, named = self._inspect(parsed)
        if named or target.address is not None:
            return
        try:
            resolve(target, policy=self._strict, resolver=self._resolver)
        except SSRFGuardError as exc:
            raise _denied(target, exc) from None
        except OSError:
            raise ToolError(f"cannot resolve host {target.host!r}") from None

    def client(self, **options: Any) -> httpx.AsyncClient:
        """An :class:`httpx.AsyncClient` whose every request and redirect hop passes this policy.

        ``options`` are :class:`httpx.AsyncClient` arguments (``timeout``, ``headers``,
        ``follow_redirects``, ...; ``max_redirects`` defaults to the policy's); ``verify``, ``cert``,
        ``http1``, ``http2``, ``limits``, ``retries`` and ``local_address`` configure the guarded
        transport. ``transport``, ``mounts``, ``proxy`` and ``app`` are refused (:class:`TypeError`):
        they would bypass the guard. Environment proxies are ignored for the same reason.
        """
        refused = sorted(_REFUSED_OPTIONS & options.keys())
        if refused:
            raise TypeError(f"EgressPolicy.client() does not accept {', '.join(refused)}: it would bypass the guard")
        transport_options = {k: options.pop(k) for k in list(options) if k in _TRANSPORT_OPTIONS}
        transport_options["trust_env"] = options.get("trust_env", True)
        options.setdefault("max_redirects", self.max_redirects)
        return httpx.AsyncClient(transport=_GuardedTransport(self, transport_options), **options)

    # internals ----------

    def _check_syntax(self, url: str) -> Target:
        try:
            return self._syntax.check_url(url)
        except SSRFGuardError as exc:
            raise _denied(None, exc) from None

    def _inspect(self, url: httpx.URL) -> tuple[Target, bool]:
        """Decide everything about an httpx-parsed URL but where its name resolves.

        Returns the origin and whether its host is allow-listed by name (addresses then unchecked).
        """
        target = self._check_syntax(str(url))
        raw_host = url.raw_host.decode("ascii").lower()
        port = url.port if url.port is not None else _DEFAULT_PORTS.get(url.scheme, 0)
        same_host = (
            target.address == _literal(raw_host) if target.address is not None else target.host == raw_host
        )
        if not same_host or target.port != port:
            raise _denied(target, "the URL's host is ambiguous (parsers disagree on it)")
        if target.address is not None:
            try:
                self._strict.check_address(target.address)
            except BlockedAddressError as exc:
                raise _denied(target, exc) from None
            listed = any(target.address.version == n.version and target.address in n for n in self._networks)
            named = False
        else:
            host = target.host.rstrip(".")
            listed = named = self._named is not None and _matches(host, self._hosts)
            if not named:
                _check_name(target, host)
        if not listed and self.ports is not None and target.port not in self.ports:
            allowed = ", ".join(str(p) for p in sorted(self.ports))
            raise _denied(target, f"port {target.port} is only allowed for allow-listed hosts (open: {allowed})")
        return target, named


class _GuardedTransport(httpx.AsyncBaseTransport):
    """Checks each request (every redirect hop is one), then sends it through a pinning transport."""

    def __init__(self, policy: EgressPolicy, options: dict[str, Any]) -> None:
        self._policy = policy
        self._strict = AsyncSafeTransport(policy=policy._strict, resolver=policy._resolver, **options)
        self._named = (
            AsyncSafeTransport(policy=policy._named, resolver=policy._resolver, **options)
            if policy._named is not None
            else None
        )

    async def handle_async_request(self, request: httpx.Request) -> httpx.Response:
        _, named = self._policy._inspect(request.url)
        transport = self._named if named and self._named is not None else self._strict
        try:
            return await transport.handle_async_request(request)
        except SSRFGuardError as exc:
            raise _denied(None, exc, url=request.url) from None

    async def aclose(self) -> None:
        await self._strict.aclose()
        if self._named is not None:
            await self._named.aclose()


async def read_capped(response: httpx.Response, limit: int) -> tuple[bytes, bool]:
    """Read at most ``limit`` bytes of a streamed ``response`` body (decoded), then close it.

    Returns ``(body, truncated)``; ``truncated`` is true when the body was longer than ``limit``.
    """
    chunks: list[bytes] = []
    size = 0
    truncated = False
    try:
        async for chunk in response.aiter_bytes():
            if size + len(chunk) > limit:
                chunks.append(chunk[: limit - size])
                truncated = True
                break
            chunks.append(chunk)
            size += len(chunk)
    finally:
        await response.aclose()
    return b"".join(chunks), truncated


def _as_network(entry: str) -> IPv4Network | IPv6Network | None:
    text = entry.strip()
    if text.startswith("[") and text.endswith("]"):
        text = text[1:-1]
    if not text or not (":" in text or re.fullmatch(r"[0-9./]+", text)):
        return None
    try:
        return ip_network(text, strict=False)
    except ValueError:
        raise ValueError(f"egress_allow: {entry!r} is not a valid IP address or CIDR (entries take no port)") from None


def _as_host_pattern(entry: str) -> str:
    text = entry.strip().rstrip(".").lower()
    try:
        text = text.encode("idna").decode("ascii") if not text.isascii() else text
    except UnicodeError:
        text = ""
    if not _HOST_PATTERN.match(text) or text.count("*") > 1 or _NUMERIC_LABEL.match(text.rsplit(".", 1)[-1]):
        raise ValueError(
            f"egress_allow: {entry!r} is not a host name ('api.example.com', '*.example.com'), IP address or CIDR"
        )
    return text


def _matches(host: str, patterns: frozenset[str]) -> bool:
    """Exact or ``*.suffix`` match on label boundaries (``*.a.com`` matches ``x.a.com``, not ``a.com``)."""
    if host in patterns:
        return True
    labels = host.split(".")
    return any(f"*.{'.'.join(labels[i:])}" in patterns for i in range(1, len(labels)))


def _check_name(target: Target, host: str) -> None:
    """Refuse names that denote the local network without needing DNS to say so."""
    labels = host.split(".")
    if _NUMERIC_LABEL.match(labels[-1]):
        raise _denied(target, f"host {host!r} is an encoded IPv4 address (no top-level domain is numeric)")
    for suffix in _PRIVATE_SUFFIXES:
        if host == suffix or host.endswith("." + suffix):
            raise _denied(target, f"host {host!r} is a local or metadata name ({suffix})")
    if len(labels) == 1:
        raise _denied(target, f"host {host!r} has no domain; dotless names resolve inside the local network")


def _literal(host: str) -> Any:
    try:
        return ip_address(host)
    except ValueError:
        return None


def _denied(target: Target | None, why: SSRFGuardError | str, *, url: httpx.URL | None = None) -> EgressDenied:
    """An :class:`EgressDenied` naming the origin and the reason, never a path, query or userinfo."""
    if isinstance(why, BlockedAddressError):
        reason = f"{why.address} is not permitted: {why.reason}"
    elif isinstance(why, BlockedURLError):
        reason = why.reason
    else:
        reason = str(why)
    origin = ""
    if target is not None:
        host = f"[{target.host}]" if ":" in target.host else target.host
        origin = f" for {target.scheme}://{host}:{target.port}"
    elif url is not None:
        origin = f" for {url.scheme}://{url.netloc.decode('ascii', 'replace').rpartition('@')[2]}"
    return EgressDenied(f"egress denied{origin}: {reason}")
