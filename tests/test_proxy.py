"""Upstreams behind an HTTP proxy: ``HTTPS_PROXY`` / ``HTTP_PROXY`` / ``NO_PROXY`` and a provider's ``proxy``.

A real forward proxy on loopback (:class:`chorus.testing.proxy.ForwardProxy`) records every request
head it gets, so each test proves the traffic went through it (or did not). The TLS upstream is a
scripted upstream serving HTTPS with a certificate of a throw-away CA (``trustme``), trusted through
``SSL_CERT_FILE``. The environment is set only while Chorus starts: providers read it once, then.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest
import trustme

from chorus.config import Config
from chorus.errors import UpstreamUnavailable
from chorus.net.proxy import EnvironmentProxies, Proxy, ProxyURLError
from chorus.testing.config import ACME_KEY, make_config
from chorus.testing.gateway import serve
from chorus.testing.proxy import ForwardProxy
from chorus.testing.server import LiveServer, free_port
from chorus.testing.upstream import Reply, ScriptedUpstream

VARIABLES = ("HTTP_PROXY", "HTTPS_PROXY", "NO_PROXY", "http_proxy", "https_proxy", "no_proxy", "ALL_PROXY", "all_proxy")


@pytest.fixture(autouse=True)
def no_proxy_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    for name in VARIABLES:
        monkeypatch.delenv(name, raising=False)


@pytest.fixture
def proxy() -> Iterator[ForwardProxy]:
    with ForwardProxy() as running:
        yield running


@pytest.fixture
def tls_upstream(tmp_path: Path) -> Iterator[tuple[ScriptedUpstream, Path]]:
    """A scripted upstream serving HTTPS, and the CA file that trusts it."""
    ca = trustme.CA()
    pem = tmp_path / "upstream.pem"
    ca.issue_cert("127.0.0.1").private_key_and_cert_chain_pem.write_to_path(str(pem))
    ca_file = tmp_path / "ca.pem"
    ca.cert_pem.write_to_path(str(ca_file))
    with ScriptedUpstream(ssl_certfile=str(pem), ssl_keyfile=str(pem)) as up:
        yield up, ca_file


def start(config: Config, monkeypatch: pytest.MonkeyPatch, **env: str) -> LiveServer:
    """Start Chorus with ``env`` set, and unset it again before the test's own requests."""
    for name, value in env.items():
        monkeypatch.setenv(name, value)
    try:
        return serve(config).start()
    finally:
        for name in env:
            monkeypatch.delenv(name)


def ask(server: LiveServer, model: str = "model/name=up/gpt-test", *, stream: bool = False) -> httpx.Response:
    return httpx.post(server.url + "/v1/chat/completions", timeout=30, headers={"authorization": f"Bearer {ACME_KEY}"},
                      json={"model": model, "messages": [{"role": "user", "content": "hi"}], "stream": stream})


def streamed(response: httpx.Response) -> str:
    assert response.status_code == 200, response.text
    chunks = [json.loads(line[6:]) for line in response.text.splitlines() if line.startswith("data: {")]
    return "".join(c["choices"][0]["delta"].get("content") or "" for c in chunks if c["choices"])


def test_an_http_upstream_goes_through_HTTP_PROXY(up: ScriptedUpstream, proxy: ForwardProxy,
                                                  monkeypatch: pytest.MonkeyPatch) -> None:
    server = start(make_config(up.base_url), monkeypatch, HTTP_PROXY=proxy.url)
    try:
        up.push(Reply("proxied"), Reply("still proxied"))
        first = ask(server)
        assert first.json()["choices"][0]["message"]["content"] == "proxied"
        # the variable is gone now: it was read once, at startup, and still applies
        second = ask(server, stream=True)
        assert streamed(second) == "still proxied"
    finally:
        server.stop()
    chat = f"http://127.0.0.1:{up.port}/v1/chat/completions"
    assert [(r.method, r.target) for r in proxy.seen()] == [("POST", chat), ("POST", chat)]  # absolute form
    assert len(up.requests) == 2


def test_a_tls_upstream_is_tunnelled_through_HTTPS_PROXY(tls_upstream: tuple[ScriptedUpstream, Path],
                                                         proxy: ForwardProxy, monkeypatch: pytest.MonkeyPatch) -> None:
    tls, ca_file = tls_upstream
    assert tls.base_url.startswith("https://")
    server = start(make_config(tls.base_url), monkeypatch, HTTPS_PROXY=proxy.url, SSL_CERT_FILE=str(ca_file))
    try:
        tls.push(Reply("through the tunnel"), Reply("streamed through it"))
        assert ask(server).json()["choices"][0]["message"]["content"] == "through the tunnel"
        assert streamed(ask(server, stream=True)) == "streamed through it"
    finally:
        server.stop()
    connects = proxy.seen("CONNECT")
    assert connects and {r.target for r in connects} == {f"127.0.0.1:{tls.port}"}
    assert proxy.seen("POST") == []  # the proxy saw a tunnel, never the request itself
    assert [r.json["messages"][-1]["content"] for r in tls.requests] == ["hi", "hi"]


def test_NO_PROXY_bypasses_the_proxy(up: ScriptedUpstream, proxy: ForwardProxy, monkeypatch: pytest.MonkeyPatch) -> None:
    server = start(make_config(up.base_url), monkeypatch, HTTP_PROXY=proxy.url, NO_PROXY="example.com, 127.0.0.1")
    try:
        assert ask(server).status_code == 200
    finally:
        server.stop()
    assert proxy.seen() == []
    assert len(up.requests) == 1


def test_a_provider_proxy_overrides_the_environment(up: ScriptedUpstream, monkeypatch: pytest.MonkeyPatch) -> None:
    dead_proxy = f"http://127.0.0.1:{free_port()}"
    with ForwardProxy(credentials=("alice", "s3cret")) as guarded:
        extra = f"""
[[providers]]
id = "via"
driver = "openai"
base_url = "{up.base_url}"
models = ["via-model"]
proxy = "{guarded.url_with("alice", "s3cret")}"

[[providers]]
id = "direct"
driver = "openai"
base_url = "{up.base_url}"
models = ["direct-model"]
proxy = ""
"""
        server = start(make_config(up.base_url, extra), monkeypatch, HTTP_PROXY=dead_proxy)
        try:
            assert ask(server, "model/name=via/via-model").status_code == 200
            assert ask(server, "model/name=direct/direct-model").status_code == 200
            assert ask(server, "model/name=up/gpt-test").status_code == 502  # the environment's (dead) proxy
        finally:
            server.stop()
        (seen,) = guarded.seen()
    assert seen.target.endswith("/v1/chat/completions")
    assert seen.headers["proxy-authorization"] == "Basic YWxpY2U6czNjcmV0"  # alice:s3cret
    assert [r.json["model"] for r in up.requests] == ["via-model", "direct-model"]
    assert "proxy-authorization" not in up.requests[0].headers  # credentials stop at the proxy


def test_proxy_credentials_never_leak(up: ScriptedUpstream, tls_upstream: tuple[ScriptedUpstream, Path],
                                      monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture) -> None:
    tls, ca_file = tls_upstream
    caplog.set_level(logging.INFO)
    with ForwardProxy(credentials=("alice", "s3cret")) as guarded:
        wrong = guarded.url_with("alice", "wrong-pass")
        extra = f"""
[[providers]]
id = "tunnel"
driver = "openai"
base_url = "{tls.base_url}"
models = ["tunnel-model"]
proxy = "{wrong}"

[[providers]]
id = "forward"
driver = "openai"
base_url = "{up.base_url}"
models = ["forward-model"]
proxy = "{wrong}"
"""
        server = start(make_config(up.base_url, extra), monkeypatch, SSL_CERT_FILE=str(ca_file))
        try:
            refused = ask(server, "model/name=tunnel/tunnel-model")
            forwarded = ask(server, "model/name=forward/forward-model", stream=True)
        finally:
            server.stop()
        assert {r.method for r in guarded.seen()} == {"CONNECT", "POST"}
    for response in (refused, forwarded):
        assert response.status_code == 502, response.text
        assert set(response.json()["error"]) == {"message", "type", "param", "code"}
        assert "wrong-pass" not in response.text and "alice" not in response.text
    assert refused.json()["error"]["code"] == "upstream_unreachable"
    assert "407" in forwarded.json()["error"]["message"]
    assert tls.requests == [] and up.requests == []
    assert caplog.records and not [r for r in caplog.records if "wrong-pass" in r.getMessage()]


def test_environment_proxy_rules() -> None:
    env = EnvironmentProxies({"HTTPS_PROXY": "http://u:p@corp:3128", "http_proxy": "plain:8080", "HTTP_PROXY": "ignored:1",
                              "NO_PROXY": "internal.example, .corp.lan, 10.0.0.0/8, localhost:8443, [::1]"})
    assert env.for_url("https://api.openai.com/v1") == Proxy("http://u:p@corp:3128")
    assert env.for_url("http://ollama:11434/v1") == Proxy("http://plain:8080")  # lower case wins, scheme optional
    for direct in ("https://internal.example/v1", "https://api.internal.example/v1", "https://x.corp.lan/v1",
                   "https://corp.lan/v1", "http://10.2.3.4:8000/v1", "https://localhost:8443/v1", "http://[::1]:80/v1"):
        assert env.for_url(direct) is None, direct
    assert env.for_url("https://localhost:9443/v1") is not None  # another port
    assert env.for_url("https://notinternal.example/v1") is not None  # a suffix is not a subdomain
    assert EnvironmentProxies({"HTTPS_PROXY": "http://corp:3128", "NO_PROXY": "*"}).for_url("https://a.b/") is None
    assert EnvironmentProxies({}).for_url("https://a.b/") is None


def test_a_proxy_hides_its_credentials() -> None:
    proxy = Proxy("http://alice:s%40cret@corp.example:3128")
    assert proxy.address == "corp.example:3128"
    assert "cret" not in repr(proxy) and "alice" not in str(proxy)
    assert proxy.authorization == "Basic YWxpY2U6c0BjcmV0"  # alice:s@cret
    assert Proxy("corp:8080").port == 8080 and Proxy("http://corp").port == 80
    for bad in ("https://alice:s3cret@corp:3128", "socks5h://alice:s3cret@corp:1080", "http://alice:s3cret@corp:99999",
                "http://alice:s3cret@:3128"):
        with pytest.raises(ProxyURLError) as raised:
            Proxy(bad)
        assert "s3cret" not in str(raised.value)


async def test_a_malformed_proxy_variable_stops_the_provider_clearly(monkeypatch: pytest.MonkeyPatch) -> None:
    from chorus_plugins.openai_provider import OpenAIProvider, OpenAISettings

    monkeypatch.setenv("HTTPS_PROXY", "socks5://alice:hunter2@corp:1080")
    provider = OpenAIProvider(OpenAISettings(id="p", driver="openai", base_url="https://api.example/v1"))
    with pytest.raises(UpstreamUnavailable) as raised:
        await provider.start()
    assert "HTTPS_PROXY" in raised.value.message and "socks5" in raised.value.message
    assert "hunter2" not in raised.value.message and "alice" not in raised.value.message
