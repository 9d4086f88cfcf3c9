"""The egress guard: our own SSRF bypass list, DNS rebinding, redirects, allow-lists, TLS names.

No test sends traffic to a non-loopback address: names resolve through a fake resolver, a spy on
``anyio.connect_tcp`` records every connection attempt (and refuses non-loopback ones instead of
connecting), and ``socket.getaddrinfo`` is fenced so that only literal addresses reach the system.
"""

from __future__ import annotations

import asyncio
import datetime as dt
import ipaddress
import json
import socket
import ssl
from collections.abc import AsyncIterator, Iterator
from typing import Any

import anyio
import httpx
import pytest

from chorus.contract.egress import EgressDenied, EgressPolicy, read_capped
from chorus.contract.tools import ToolError
from chorus.testing.server import LiveServer

PUBLIC = "93.184.215.14"  # never connected to: the spy refuses every non-loopback address

DNS: dict[str, list[str]] = {
    "example.com": [PUBLIC],
    "localhost": ["127.0.0.1"],
    "localtest.me": ["127.0.0.1"],
    "127.0.0.1.nip.io": ["127.0.0.1"],
    "10.0.0.1.nip.io": ["10.0.0.1"],
    "169.254.169.254.nip.io": ["169.254.169.254"],
    "metadata.attacker.example": ["169.254.169.254"],
    "dual.attacker.example": [PUBLIC, "127.0.0.1"],
    "v6loop.attacker.example": ["::1"],
    "mapped.attacker.example": ["::ffff:10.0.0.1"],
    "nat64.attacker.example": ["64:ff9b::a9fe:a9fe"],
    "sixtofour.attacker.example": ["2002:c0a8:101::1"],
    "cgnat.attacker.example": ["100.64.0.1"],
    "ula.attacker.example": ["fd00::1"],
    "zero.attacker.example": ["0.0.0.0"],
    "mcast.attacker.example": ["224.0.0.251"],
    "loopback.test": ["127.0.0.1"],
    "orders.svc.test": ["127.0.0.1"],
    "svc.test": ["127.0.0.1"],
    "secure.test": ["127.0.0.1"],
}


class FakeResolver:
    """``socket.getaddrinfo`` over :data:`DNS` (literal addresses answer themselves); counts calls."""

    def __init__(self, table: dict[str, list[str]] | None = None) -> None:
        self.table = DNS if table is None else table
        self.calls: list[str] = []

    def answers(self, host: str) -> list[str]:
        try:
            return [str(ipaddress.ip_address(host))]
        except ValueError:
            pass
        if host.rstrip(".") not in self.table:
            raise socket.gaierror(socket.EAI_NONAME, f"{host} is not in the fake DNS")
        return self.table[host.rstrip(".")]

    def __call__(self, host: str, port: int, *args: Any, **kwargs: Any) -> list[tuple[Any, ...]]:
        self.calls.append(host)
        rows: list[tuple[Any, ...]] = []
        for ip in self.answers(host):
            if ":" in ip:
                rows.append((socket.AF_INET6, socket.SOCK_STREAM, 6, "", (ip, port, 0, 0)))
            else:
                rows.append((socket.AF_INET, socket.SOCK_STREAM, 6, "", (ip, port)))
        return rows


class Rebinding(FakeResolver):
    """Answers a public address on the first lookup, then ``then`` on every later one."""

    def __init__(self, then: str) -> None:
        super().__init__({})
        self.then = then

    def answers(self, host: str) -> list[str]:
        return [PUBLIC if not self.calls[:-1] else self.then]


@pytest.fixture(autouse=True)
def connections(monkeypatch: pytest.MonkeyPatch) -> list[str]:
    """Every address the guarded client tries to connect to; non-loopback ones are never dialled."""
    seen: list[str] = []
    real_connect = anyio.connect_tcp
    real_getaddrinfo = socket.getaddrinfo

    async def spy(remote_host: Any, remote_port: int, **kwargs: Any) -> Any:
        seen.append(str(remote_host))
        if not ipaddress.ip_address(str(remote_host)).is_loopback:
            raise OSError(f"test network: {remote_host} is unreachable (not dialled)")
        return await real_connect(remote_host, remote_port, **kwargs)

    def fenced_getaddrinfo(host: Any, *args: Any, **kwargs: Any) -> Any:
        text = host.decode() if isinstance(host, bytes) else str(host)
        try:
            ipaddress.ip_address(text)
        except ValueError:
            raise AssertionError(f"a test tried a real DNS lookup of {text!r}") from None
        return real_getaddrinfo(host, *args, **kwargs)

    monkeypatch.setattr(anyio, "connect_tcp", spy)
    monkeypatch.setattr(socket, "getaddrinfo", fenced_getaddrinfo)
    return seen


# ---------------------------------------------------------------- the bypass list (ours)

BYPASSES: list[str] = [
    # loopback, spelled every way
    "http://localhost/",
    "http://LOCALHOST:8080/",
    "http://localhost./",
    "http://app.localhost/",
    "http://ⓛⓞⓒⓐⓛⓗⓞⓢⓣ/",
    "http://127.0.0.1/",
    "http://127.0.0.1:8080/admin",
    "http://127.0.0.1./",
    "http://127.1/",
    "http://127.0.1/",
    "http://0/",
    "http://0.0.0.0/",
    "http://2130706433/",
    "http://0x7f000001/",
    "http://0x7f.1/",
    "http://0x7f.0x0.0x0.0x1/",
    "http://0177.0.0.1/",
    "http://017700000001/",
    "http://127。0。0。1/",
    "http://127．0．0．1/",
    "http://①②⑦.0.0.1/",
    "http://%31%32%37.0.0.1/",
    "http://[::1]/",
    "http://[::]/",
    "http://[0:0:0:0:0:0:0:1]/",
    "http://[::ffff:127.0.0.1]/",
    "http://[::ffff:7f00:1]/",
    "http://[::127.0.0.1]/",
    "http://[::1%25eth0]/",
    # private, link-local, CGNAT, multicast, reserved
    "http://10.0.0.1/",
    "http://172.16.0.1/",
    "http://192.168.1.1/",
    "http://100.64.0.1/",
    "http://224.0.0.1/",
    "http://255.255.255.255/",
    "http://240.0.0.1/",
    "http://[fe80::1]/",
    "http://[fc00::1]/",
    "http://[fd12:3456::1]/",
    "http://[ff02::1]/",
    # cloud metadata
    "http://169.254.169.254/latest/meta-data/",
    "https://169.254.169.254/",
    "http://[::ffff:a9fe:a9fe]/",
    "http://[64:ff9b::a9fe:a9fe]/",
    "http://[64:ff9b::7f00:1]/",
    "http://[2002:a9fe:a9fe::]/",
    "http://100.100.100.200/latest/meta-data/",
    "http://metadata.google.internal/computeMetadata/v1/",
    "http://metadata.google.internal./",
    "http://metadata/",
    "http://metadata.goog/",
    "http://instance-data/latest/",
    "http://printer.local/",
    "http://router.home.arpa/",
    # schemes
    "gopher://127.0.0.1:6379/_INFO",
    "file:///etc/passwd",
    "dict://127.0.0.1:11211/stat",
    "ftp://example.com/",
    "jar:http://example.com!/",
    # parser confusion and credentials
    "http://evil.com@127.0.0.1/",
    "http://example.com%00@127.0.0.1/",
    "http://webhook.site\\@127.0.0.1/",
    "http://user:pass@example.com/",
    # names that resolve inside (fake DNS)
    "http://localtest.me/",
    "http://127.0.0.1.nip.io/",
    "http://10.0.0.1.nip.io/",
    "http://169.254.169.254.nip.io/",
    "http://metadata.attacker.example/",
    "http://dual.attacker.example/",
    "http://v6loop.attacker.example/",
    "http://mapped.attacker.example/",
    "http://nat64.attacker.example/",
    "http://sixtofour.attacker.example/",
    "http://cgnat.attacker.example/",
    "http://ula.attacker.example/",
    "http://zero.attacker.example/",
    "http://mcast.attacker.example/",
    # ports of public hosts
    "http://example.com:22/",
    "http://example.com:6379/",
    "http://example.com:2375/",
    "http://example.com:0/",
]


def test_bypass_list_is_ours_and_long() -> None:
    assert len(BYPASSES) >= 40
    assert len(set(BYPASSES)) == len(BYPASSES)


@pytest.mark.parametrize("url", BYPASSES)
def test_check_url_refuses(url: str, connections: list[str]) -> None:
    policy = EgressPolicy(resolver=FakeResolver())
    with pytest.raises(EgressDenied):
        policy.check_url(url)
    assert connections == []


@pytest.mark.parametrize("url", BYPASSES)
async def test_client_refuses_before_connecting(url: str, connections: list[str]) -> None:
    policy = EgressPolicy(resolver=FakeResolver())
    async with policy.client(timeout=5, follow_redirects=True) as client:
        # httpx itself rejects a few spellings (unencodable IDNA) before our transport sees them.
        with pytest.raises((EgressDenied, httpx.InvalidURL)):
            await client.get(url)
    assert connections == []


def test_public_names_pass_and_denials_are_tool_errors() -> None:
    policy = EgressPolicy(resolver=FakeResolver())
    policy.check_url("https://example.com/path?q=1")
    policy.check_url("http://EXAMPLE.com./")
    assert issubclass(EgressDenied, ToolError)


def test_denial_names_host_and_rule_but_not_path_or_query() -> None:
    policy = EgressPolicy(resolver=FakeResolver())
    with pytest.raises(EgressDenied) as caught:
        policy.check_url("http://169.254.169.254/latest/meta-data/iam?token=hunter2secret")
    message = str(caught.value)
    assert "169.254.169.254" in message and "metadata" in message.lower()
    assert "hunter2secret" not in message and "iam" not in message


def test_unresolvable_name_is_a_tool_error_not_a_denial() -> None:
    policy = EgressPolicy(resolver=FakeResolver())
    with pytest.raises(ToolError) as caught:
        policy.check_url("http://nowhere.example/")
    assert not isinstance(caught.value, EgressDenied)


# ---------------------------------------------------------------- DNS rebinding


async def test_rebinding_after_check_never_reaches_loopback(connections: list[str]) -> None:
    resolver = Rebinding(then="127.0.0.1")
    policy = EgressPolicy(resolver=resolver)
    policy.check_url("http://rebind.attacker.example/")  # first lookup: public, accepted
    async with policy.client(timeout=5) as client:
        with pytest.raises(EgressDenied, match="127.0.0.1"):
            await client.get("http://rebind.attacker.example/")  # second lookup: loopback
    assert connections == []


async def test_client_connects_to_the_address_it_validated(connections: list[str]) -> None:
    resolver = Rebinding(then="127.0.0.1")
    policy = EgressPolicy(resolver=resolver)
    async with policy.client(timeout=5) as client:
        with pytest.raises(httpx.ConnectError):  # the spy refuses to dial the public address
            await client.get("http://rebind.attacker.example/")
        assert connections == [PUBLIC]
        assert resolver.calls == ["rebind.attacker.example"]  # one lookup, and that answer was dialled
        with pytest.raises(EgressDenied):  # the next connection looks up again: loopback now
            await client.get("http://rebind.attacker.example/")
    assert connections == [PUBLIC]


async def test_rebinding_to_metadata_is_refused(connections: list[str]) -> None:
    policy = EgressPolicy(resolver=Rebinding(then="169.254.169.254"))
    policy.check_url("http://rebind.attacker.example/")
    async with policy.client(timeout=5) as client:
        with pytest.raises(EgressDenied, match="169.254.169.254"):
            await client.get("http://rebind.attacker.example/")
    assert connections == []


# ---------------------------------------------------------------- a real loopback server


async def _app(scope: dict[str, Any], receive: Any, send: Any) -> None:
    if scope["type"] == "lifespan":
        while True:
            message = await receive()
            if message["type"] == "lifespan.startup":
                await send({"type": "lifespan.startup.complete"})
            elif message["type"] == "lifespan.shutdown":
                await send({"type": "lifespan.shutdown.complete"})
                return
    path = scope["path"]
    query = dict(pair.split("=", 1) for pair in scope["query_string"].decode().split("&") if "=" in pair)
    if path == "/redirect":
        from urllib.parse import unquote

        location = unquote(query["to"]).encode()
        await send({"type": "http.response.start", "status": 302, "headers": [(b"location", location)]})
        await send({"type": "http.response.body", "body": b""})
        return
    if path == "/big":
        await send({"type": "http.response.start", "status": 200, "headers": [(b"content-type", b"text/plain")]})
        for _ in range(64):
            await send({"type": "http.response.body", "body": b"x" * 4096, "more_body": True})
        await send({"type": "http.response.body", "body": b""})
        return
    headers = {k.decode(): v.decode() for k, v in scope["headers"]}
    body = json.dumps({"path": path, "host": headers.get("host")}).encode()
    await send({"type": "http.response.start", "status": 200, "headers": [(b"content-type", b"application/json")]})
    await send({"type": "http.response.body", "body": body})


@pytest.fixture(scope="module")
def server() -> Iterator[LiveServer]:
    with LiveServer(_app) as live:
        yield live


@pytest.fixture
async def loopback_client() -> AsyncIterator[httpx.AsyncClient]:
    async with EgressPolicy(["127.0.0.1"], resolver=FakeResolver()).client(timeout=5, follow_redirects=True) as c:
        yield c


async def test_allow_listed_loopback_is_reachable(server: LiveServer, loopback_client: httpx.AsyncClient) -> None:
    response = await loopback_client.get(f"{server.url}/hello")
    assert response.status_code == 200 and response.json()["path"] == "/hello"


@pytest.mark.parametrize(
    "target",
    [
        "http://169.254.169.254/latest/meta-data/",
        "http://metadata.google.internal/computeMetadata/v1/",
        "http://localhost:{port}/hello",
        "http://127.0.0.2:{port}/hello",
        "http://[::1]:{port}/hello",
        "http://127.0.0.1.nip.io:{port}/hello",
        "http://10.0.0.1/",
        "file:///etc/passwd",
    ],
)
async def test_redirect_hop_is_checked(
    target: str, server: LiveServer, loopback_client: httpx.AsyncClient, connections: list[str]
) -> None:
    to = target.format(port=server.port)
    with pytest.raises(EgressDenied):
        await loopback_client.get(f"{server.url}/redirect", params={"to": to})
    assert set(connections) == {"127.0.0.1"}  # only the allowed first hop was ever dialled


async def test_redirect_within_the_allow_list_is_followed(
    server: LiveServer, loopback_client: httpx.AsyncClient
) -> None:
    response = await loopback_client.get(f"{server.url}/redirect", params={"to": f"{server.url}/landed"})
    assert response.json()["path"] == "/landed"
    assert len(response.history) == 1


async def test_redirect_chain_is_capped(server: LiveServer) -> None:
    policy = EgressPolicy(["127.0.0.1"], resolver=FakeResolver(), max_redirects=0)
    async with policy.client(timeout=5, follow_redirects=True) as client:
        with pytest.raises(httpx.TooManyRedirects):
            await client.get(f"{server.url}/redirect", params={"to": f"{server.url}/landed"})


@pytest.mark.parametrize("allow", [["127.0.0.1"], ["127.0.0.0/8"], ["::1", "127.0.0.1/32"], ["[::1]", "127.0.0.0/24"]])
async def test_ip_and_cidr_allow_entries(allow: list[str], server: LiveServer) -> None:
    async with EgressPolicy(allow, resolver=FakeResolver()).client(timeout=5) as client:
        assert (await client.get(f"{server.url}/ok")).status_code == 200
    with pytest.raises(EgressDenied):
        EgressPolicy(allow, resolver=FakeResolver()).check_url(f"http://10.0.0.1:{server.port}/")


def test_ip_allow_entry_covers_addresses_not_local_names_or_neighbours(server: LiveServer) -> None:
    policy = EgressPolicy(["127.0.0.1"], resolver=FakeResolver())
    policy.check_url("http://loopback.test/")  # resolves into the allowed network
    for url in (
        f"http://localhost:{server.port}/",  # refused by name: list "localhost" to use it
        f"http://127.0.0.2:{server.port}/",  # a neighbour outside 127.0.0.1/32
        f"http://loopback.test:{server.port}/",  # a non-default port needs the name itself listed
    ):
        with pytest.raises(EgressDenied):
            policy.check_url(url)


async def test_hostname_allow_entry_pins_and_keeps_the_host_header(server: LiveServer, connections: list[str]) -> None:
    resolver = FakeResolver()
    policy = EgressPolicy(["Loopback.Test."], resolver=resolver)
    url = f"http://loopback.test:{server.port}/named"
    policy.check_url(url)
    async with policy.client(timeout=5) as client:
        response = await client.get(url)
    assert response.json() == {"path": "/named", "host": f"loopback.test:{server.port}"}
    assert connections == ["127.0.0.1"] and resolver.calls == ["loopback.test"]
    with pytest.raises(EgressDenied):  # the same address under an unlisted name
        policy.check_url(f"http://localtest.me:{server.port}/")


async def test_wildcard_allow_entry(server: LiveServer) -> None:
    policy = EgressPolicy(["*.svc.test"], resolver=FakeResolver())
    async with policy.client(timeout=5) as client:
        assert (await client.get(f"http://orders.svc.test:{server.port}/w")).status_code == 200
        with pytest.raises(EgressDenied):  # the apex is not a subdomain
            await client.get(f"http://svc.test:{server.port}/w")
        with pytest.raises(EgressDenied):  # label boundary: "evilsvc.test" is not "*.svc.test"
            await client.get(f"http://evilsvc.test:{server.port}/w")


async def test_localhost_by_name_when_listed(server: LiveServer) -> None:
    async with EgressPolicy(["localhost"], resolver=FakeResolver()).client(timeout=5) as client:
        assert (await client.get(f"http://localhost:{server.port}/l")).status_code == 200


@pytest.mark.parametrize(
    "entry",
    ["not a host!", "*", "a.*.com", "64:ff9b::/96", "10.0.0.0/33", "", "::ffff:0:0/96", "127.1", "0x7f.1",
     "127.0.0.1:9000", "http://example.com"],
)
def test_bad_allow_entries_are_value_errors(entry: str) -> None:
    with pytest.raises(ValueError, match="egress_allow"):
        EgressPolicy([entry])


def test_allow_must_be_a_list() -> None:
    with pytest.raises(TypeError):
        EgressPolicy("127.0.0.1")


def test_ports() -> None:
    resolver = FakeResolver()
    with pytest.raises(EgressDenied, match="port 8443"):
        EgressPolicy(resolver=resolver).check_url("https://example.com:8443/")
    EgressPolicy(resolver=resolver, ports=None).check_url("https://example.com:8443/")
    EgressPolicy(resolver=resolver, ports=[80, 443, 8443]).check_url("https://example.com:8443/")
    EgressPolicy(["example.com"], resolver=resolver).check_url("https://example.com:8443/")
    EgressPolicy(["127.0.0.1"], resolver=resolver).check_url("http://127.0.0.1:9000/")


def test_client_refuses_options_that_bypass_the_guard() -> None:
    policy = EgressPolicy()
    for option in ("transport", "proxy", "mounts"):
        with pytest.raises(TypeError, match=option):
            policy.client(**{option: None})


async def test_environment_proxies_are_ignored(server: LiveServer, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("HTTP_PROXY", "http://127.0.0.1:9")
    monkeypatch.setenv("ALL_PROXY", "http://127.0.0.1:9")
    async with EgressPolicy(["127.0.0.1"]).client(timeout=5) as client:
        assert (await client.get(f"{server.url}/direct")).json()["path"] == "/direct"


async def test_read_capped(server: LiveServer, loopback_client: httpx.AsyncClient) -> None:
    async with loopback_client.stream("GET", f"{server.url}/big") as response:
        data, truncated = await read_capped(response, 10_000)
    assert (len(data), truncated) == (10_000, True)
    async with loopback_client.stream("GET", f"{server.url}/big") as response:
        data, truncated = await read_capped(response, 64 * 4096)
    assert (len(data), truncated) == (64 * 4096, False)


# ---------------------------------------------------------------- TLS keeps the host name


def _certificate(host: str) -> tuple[bytes, bytes]:
    pytest.importorskip("cryptography")
    from cryptography import x509
    from cryptography.hazmat.primitives import hashes, serialization
    from cryptography.hazmat.primitives.asymmetric import ec
    from cryptography.x509.oid import NameOID

    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, host)])
    now = dt.datetime.now(dt.UTC)
    cert = (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - dt.timedelta(minutes=5))
        .not_valid_after(now + dt.timedelta(hours=1))
        .add_extension(x509.SubjectAlternativeName([x509.DNSName(host)]), critical=False)
        .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
        .sign(key, hashes.SHA256())
    )
    pem_key = key.private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
    )
    return cert.public_bytes(serialization.Encoding.PEM), pem_key


async def test_https_to_a_pinned_address_verifies_the_host_name(tmp_path: Any) -> None:
    cert_pem, key_pem = _certificate("secure.test")
    (tmp_path / "cert.pem").write_bytes(cert_pem)
    (tmp_path / "key.pem").write_bytes(key_pem)
    server_ctx = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    server_ctx.load_cert_chain(tmp_path / "cert.pem", tmp_path / "key.pem")
    names: list[str | None] = []
    server_ctx.sni_callback = lambda sock, name, ctx: names.append(name)

    async def handle(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        await reader.readuntil(b"\r\n\r\n")
        writer.write(b"HTTP/1.1 200 OK\r\ncontent-length: 2\r\nconnection: close\r\n\r\nok")
        await writer.drain()
        writer.close()

    srv = await asyncio.start_server(handle, "127.0.0.1", 0, ssl=server_ctx)
    port = srv.sockets[0].getsockname()[1]
    client_ctx = ssl.create_default_context(cadata=cert_pem.decode())
    try:
        policy = EgressPolicy(["secure.test"], resolver=FakeResolver())
        async with policy.client(timeout=5, verify=client_ctx) as client:
            response = await client.get(f"https://secure.test:{port}/")
            assert response.text == "ok"
        assert names == ["secure.test"]  # SNI is the URL's host, not the pinned address
        async with EgressPolicy(["127.0.0.1"], resolver=FakeResolver()).client(timeout=5, verify=client_ctx) as client:
            with pytest.raises(httpx.ConnectError):  # the certificate is for secure.test, not 127.0.0.1
                await client.get(f"https://127.0.0.1:{port}/")
    finally:
        srv.close()
        await srv.wait_closed()
