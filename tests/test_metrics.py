"""Prometheus metrics end to end: real HTTP on loopback, the official SDK, /metrics parsed with
prometheus_client's own parser (counters moving, never timing thresholds)."""

from __future__ import annotations

import json
import time
from pathlib import Path

import httpx
import openai
import pytest
from prometheus_client.parser import text_string_to_metric_families

from chorus.app import create_app
from chorus.context import Observation
from chorus.runtime.observe import METRICS, Observer
from chorus.testing.config import ACME_KEY, make_config
from chorus.testing.server import LiveServer, free_port
from chorus.testing.upstream import Error, Hang, RawStream, Reply, ScriptedUpstream
from tests.test_serve_workers import serve, wait_for_workers, write_config

DOCS = Path(__file__).resolve().parent.parent / "docs"
TOOL_BOT = """
[[skillsets]]
id = "maths"
workspace = "acme"
[[skillsets.tools]]
name = "calc"
driver = "calculator"

[[bots]]
id = "agent"
workspace = "acme"
model = "up/gpt-test"
skillsets = ["maths"]
"""


def samples(text: str) -> dict[tuple[str, frozenset[tuple[str, str]]], float]:
    """Every sample of an exposition, keyed by name and label set."""
    found: dict[tuple[str, frozenset[tuple[str, str]]], float] = {}
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            found[(sample.name, frozenset(sample.labels.items()))] = sample.value
    return found


def value(text: str, name: str, **labels: str) -> float:
    """The sum of ``name``'s samples whose labels include ``labels``."""
    wanted = set(labels.items())
    return sum(v for (n, ls), v in samples(text).items() if n == name and wanted <= ls)


def scrape(url: str, **headers: str) -> str:
    response = httpx.get(url + "/metrics", headers=headers)
    assert response.status_code == 200, response.text
    assert response.headers["content-type"].startswith("text/plain")
    return response.text


@pytest.fixture
def server(scripted_upstream: ScriptedUpstream) -> LiveServer:
    with LiveServer(create_app(make_config(scripted_upstream.base_url, TOOL_BOT))) as live:
        yield live


def test_counters_move_with_requests(server: LiveServer, scripted_upstream: ScriptedUpstream) -> None:
    before = scrape(server.url)
    assert value(before, "chorus_requests_total") == 0
    scripted_upstream.push(
        Reply("hello", usage={"prompt_tokens": 11, "completion_tokens": 3, "total_tokens": 14}),
        Reply("streamed answer", usage={"prompt_tokens": 5, "completion_tokens": 2, "total_tokens": 7}),
        Error(500, "boom"),
        Reply(content=None, tool_calls=[{"id": "c1", "type": "function",
                                         "function": {"name": "calc", "arguments": '{"expression": "6*7"}'}},
                                        {"id": "c2", "type": "function",
                                         "function": {"name": "calc", "arguments": "not json"}}],
              usage={"prompt_tokens": 20, "completion_tokens": 4, "total_tokens": 24}),
        Reply("42", usage={"prompt_tokens": 30, "completion_tokens": 1, "total_tokens": 31}),
    )
    with server.openai_client(ACME_KEY) as client:
        client.chat.completions.create(model="model/name=up/gpt-test", messages=[{"role": "user", "content": "hi"}])
        stream = client.chat.completions.create(model="model/name=up/gpt-test", stream=True,
                                                messages=[{"role": "user", "content": "hi"}])
        assert "".join(c.choices[0].delta.content or "" for c in stream if c.choices) == "streamed answer"
        with pytest.raises(openai.APIStatusError):
            client.chat.completions.create(model="model/name=up/gpt-test", messages=[{"role": "user", "content": "hi"}])
        with pytest.raises(openai.NotFoundError):
            client.chat.completions.create(model="bot/id=nobody", messages=[{"role": "user", "content": "hi"}])
        answer = client.chat.completions.create(model="bot/id=agent", messages=[{"role": "user", "content": "6*7?"}])
        assert answer.choices[0].message.content == "42"
    with pytest.raises(openai.AuthenticationError), openai.OpenAI(base_url=server.base_url, api_key="sk-wrong",
                                                                   max_retries=0) as wrong:
        wrong.chat.completions.create(model="model/name=up/gpt-test", messages=[{"role": "user", "content": "hi"}])

    text = scrape(server.url)
    assert value(text, "chorus_requests_total", route="chat", target_kind="model", provider="up", status="200") == 2
    assert value(text, "chorus_requests_total", route="chat", target_kind="model", provider="up", status="502") == 1
    assert value(text, "chorus_requests_total", route="chat", target_kind="bot", provider="up", status="200") == 1
    assert value(text, "chorus_requests_total", route="chat", status="404") == 1
    assert value(text, "chorus_requests_total", route="chat", status="401") == 1
    assert value(text, "chorus_request_errors_total", route="chat", code="model_not_found") == 1
    assert value(text, "chorus_request_errors_total", route="chat", code="invalid_api_key") == 1
    # tokens: the plain answers and both hidden steps of the bot, summed
    assert value(text, "chorus_tokens_total", direction="input") == 11 + 5 + 20 + 30
    assert value(text, "chorus_tokens_total", direction="output", target_kind="bot") == 4 + 1
    assert value(text, "chorus_upstream_calls_total", provider="up") == 5  # the failed call counts too
    assert value(text, "chorus_tool_calls_total", target_kind="bot") == 2
    assert value(text, "chorus_tool_errors_total", target_kind="bot") == 1  # the arguments that are not JSON
    assert value(text, "chorus_request_duration_seconds_count", route="chat") == 6
    assert value(text, "chorus_gateway_overhead_seconds_count", route="chat", target_kind="bot") == 1
    assert value(text, "chorus_upstream_duration_seconds_count", provider="up") == 4
    assert value(text, "chorus_time_to_first_token_seconds_count", target_kind="model") == 1


def test_retrieval_latency_is_observed(scripted_upstream: ScriptedUpstream) -> None:
    kb = Path(__file__).parent / "data" / "kb"
    config = make_config(scripted_upstream.base_url, f"""
[[datasets]]
id = "handbook"
workspace = "acme"
sources = ["{kb}/*.md"]

[[bots]]
id = "helpdesk"
workspace = "acme"
model = "up/gpt-test"
datasets = ["handbook"]
""")
    with LiveServer(create_app(config)) as server, server.openai_client(ACME_KEY) as client:
        scripted_upstream.push(Reply("see [1]"))
        client.chat.completions.create(model="bot/id=helpdesk", messages=[{"role": "user", "content": "refund policy"}])
        text = scrape(server.url)
    assert value(text, "chorus_retrieval_duration_seconds_count") == 1
    assert value(text, "chorus_search_duration_seconds_count") == 0


def test_facts_of_other_features_reach_the_metrics() -> None:
    """Limits, prices, retries, fallbacks and breakers report through the observation (and the
    observer for a breaker's state): the documented way other parts of Chorus add their facts."""
    from chorus.testing.config import make_config as config_for

    observer = Observer.from_config(config_for("http://127.0.0.1:9/v1"), environ={})
    o = observer.start("chat")
    o.target_kind, o.provider, o.status, o.error, o.rejection = "model", "up", 429, "rate_limit_exceeded", "rate_limit"
    observer.finish(o)
    o = observer.start("chat")
    o.target_kind, o.provider, o.cost, o.retries, o.fallbacks, o.circuit_opens = "bot", "up", 0.25, 2, 1, 1
    o.key_id = "key_123"
    observer.finish(o)
    observer.circuit_changed("up", True)
    assert observer.metrics is not None
    text = observer.metrics.render()[0].decode()
    assert value(text, "chorus_rejections_total", reason="rate_limit") == 1
    assert value(text, "chorus_cost_usd_total", target_kind="bot", provider="up") == 0.25
    assert value(text, "chorus_retries_total", provider="up") == 2
    assert value(text, "chorus_fallbacks_total", provider="up") == 1
    assert value(text, "chorus_circuit_opens_total", provider="up") == 1
    assert value(text, "chorus_circuit_open", provider="up") == 1
    observer.circuit_changed("up", False)
    assert value(observer.metrics.render()[0].decode(), "chorus_circuit_open", provider="up") == 0
    assert isinstance(o, Observation)


def test_every_documented_metric_is_exported(server: LiveServer) -> None:
    names = {family.name for family in text_string_to_metric_families(scrape(server.url))}
    for name in METRICS:
        assert name.removesuffix("_total") in names, name
    doc = (DOCS / "observability.md").read_text()
    for name in METRICS:
        assert f"`{name}`" in doc, f"{name} is not explained in docs/observability.md"


def test_the_dashboard_queries_only_exported_metrics(server: LiveServer) -> None:
    exported: set[str] = set()
    for family in text_string_to_metric_families(scrape(server.url)):
        exported.update(sample_name for sample_name in (family.name, family.name + "_total", family.name + "_bucket",
                                                        family.name + "_sum", family.name + "_count"))
    dashboard = json.loads((DOCS / "grafana-dashboard.json").read_text())
    queried: set[str] = set()
    import re

    for panel in dashboard["panels"]:
        for target in panel.get("targets", []):
            queried.update(re.findall(r"\bchorus_[a-z_]+", target["expr"]))
    assert queried, "the dashboard queries nothing"
    assert queried <= exported, queried - exported


def test_metrics_can_be_turned_off(scripted_upstream: ScriptedUpstream) -> None:
    config = make_config(scripted_upstream.base_url, "\n[metrics]\nenabled = false\n")
    with LiveServer(create_app(config)) as server, server.openai_client(ACME_KEY) as client:
        client.chat.completions.create(model="model/name=up/gpt-test", messages=[{"role": "user", "content": "hi"}])
        assert httpx.get(server.url + "/metrics").status_code == 404


def test_a_bearer_token_guards_the_metrics(scripted_upstream: ScriptedUpstream) -> None:
    config = make_config(scripted_upstream.base_url, '\n[metrics]\nbearer_token = "scrape-me"\n')
    with LiveServer(create_app(config)) as server:
        assert httpx.get(server.url + "/metrics").status_code == 401
        assert httpx.get(server.url + "/metrics", headers={"authorization": "Bearer nope"}).status_code == 401
        assert httpx.get(server.url + "/metrics", headers={"authorization": "Bearer " + ACME_KEY}).status_code == 401
        scrape(server.url, authorization="Bearer scrape-me")


def test_metrics_on_their_own_port(scripted_upstream: ScriptedUpstream) -> None:
    port = free_port()
    config = make_config(scripted_upstream.base_url, f'\n[metrics]\nport = {port}\nbearer_token = "t"\n')
    with LiveServer(create_app(config)) as server, server.openai_client(ACME_KEY) as client:
        client.chat.completions.create(model="model/name=up/gpt-test", messages=[{"role": "user", "content": "hi"}])
        assert httpx.get(server.url + "/metrics").status_code == 404
        assert httpx.get(f"http://127.0.0.1:{port}/metrics").status_code == 401
        text = scrape(f"http://127.0.0.1:{port}", authorization="Bearer t")
        assert value(text, "chorus_requests_total", status="200") == 1


@pytest.mark.skipif(not Path("/proc/self/stat").exists(), reason="chorus serve --workers uses SO_REUSEPORT (Linux)")
@pytest.mark.parametrize("own_port", [False, True])
def test_two_workers_report_together(tmp_path: Path, upstream: ScriptedUpstream, own_port: bool) -> None:
    """``chorus serve --workers 2``: whichever worker (or the supervisor's port) answers /metrics
    reports every worker's requests."""
    upstream.reset()
    port, metrics_port = free_port(), free_port()
    config = write_config(tmp_path, upstream, f"[metrics]\nport = {metrics_port}\n" if own_port else "")
    process = serve(config, port, tmp_path / "data")
    metrics_url = f"http://127.0.0.1:{metrics_port}" if own_port else f"http://127.0.0.1:{port}"
    try:
        workers = wait_for_workers(process, port)
        requests = 12
        served_by: set[str] = set()
        for _ in range(requests):  # a fresh connection each time: the kernel spreads them over the workers
            with httpx.Client(base_url=f"http://127.0.0.1:{port}") as http:
                response = http.post("/v1/chat/completions", headers={"authorization": "Bearer sk-workers-test"},
                                     json={"model": "model/name=up/gpt-test", "messages": [{"role": "user", "content": "hi"}]})
                assert response.status_code == 200
        deadline = time.monotonic() + 10
        while True:
            text = scrape(metrics_url)
            total = value(text, "chorus_requests_total", status="200")
            if total == requests or time.monotonic() > deadline:
                break
            time.sleep(0.2)
        assert total == requests
        assert value(text, "chorus_upstream_calls_total", provider="up") == requests
        files = list((tmp_path / "data" / "metrics").glob("*.db"))
        served_by = {f.stem.rsplit("_", 1)[-1] for f in files}
        assert {str(pid) for pid in workers} <= served_by  # both workers wrote samples
    finally:
        process.terminate()
        output, _ = process.communicate(timeout=20)
        upstream.reset()
    assert process.returncode == 0, output


def test_stale_worker_files_are_cleared_at_start(tmp_path: Path) -> None:
    from chorus.cli.main import prepare_multiprocess_metrics

    directory = tmp_path / "data" / "metrics"
    directory.mkdir(parents=True)
    (directory / "counter_4242.db").write_bytes(b"stale")
    env = {"CHORUS_DATA_DIR": str(tmp_path / "data")}
    assert prepare_multiprocess_metrics(None, env) == str(directory)
    assert not list(directory.iterdir())
    assert env["PROMETHEUS_MULTIPROC_DIR"] == str(directory)


def test_a_stream_failing_after_its_start_and_a_client_leaving(server: LiveServer,
                                                               scripted_upstream: ScriptedUpstream) -> None:
    """A stream that breaks mid-way was answered 200 but counts as an error; a client that leaves is a 499."""
    chunk = '{"id": "c", "object": "chat.completion.chunk", "created": 1, "model": "gpt-test", "choices": [{"index": 0, "delta": {"content": "half"}, "finish_reason": null}]}'
    scripted_upstream.push(RawStream([chunk]))  # ends without [DONE]
    with server.openai_client(ACME_KEY) as client:
        stream = client.chat.completions.create(model="model/name=up/gpt-test", stream=True,
                                                messages=[{"role": "user", "content": "hi"}])
        with pytest.raises(openai.APIError):
            for _ in stream:
                pass
    scripted_upstream.push(Hang(30))
    with pytest.raises(httpx.ReadTimeout):
        httpx.post(server.base_url + "/chat/completions", timeout=0.5, headers={"authorization": f"Bearer {ACME_KEY}"},
                   json={"model": "model/name=up/gpt-test", "messages": [{"role": "user", "content": "hi"}]})
    assert scripted_upstream.wait_for_disconnect(10)
    deadline = time.monotonic() + 10
    while value(text := scrape(server.url), "chorus_requests_total", status="499") < 1 and time.monotonic() < deadline:
        time.sleep(0.05)
    assert value(text, "chorus_requests_total", status="200") == 1
    assert value(text, "chorus_request_errors_total", code="upstream_invalid_response") == 1
    assert value(text, "chorus_requests_total", status="499") == 1
    assert value(text, "chorus_request_errors_total", code="client_gone") == 1


def test_the_other_routes_are_counted(server: LiveServer) -> None:
    with server.openai_client(ACME_KEY) as client:
        client.models.list()
        client.embeddings.create(model="model/name=up/gpt-test", input="hello")
        with pytest.raises(openai.NotFoundError):
            client.files.retrieve("file-missing")
    with pytest.raises(openai.AuthenticationError), openai.OpenAI(base_url=server.base_url, api_key="sk-wrong",
                                                                   max_retries=0) as wrong:
        wrong.models.list()
    text = scrape(server.url)
    assert value(text, "chorus_requests_total", route="models", status="200") == 1
    assert value(text, "chorus_requests_total", route="models", status="401") == 1
    assert value(text, "chorus_requests_total", route="embeddings", status="200") == 1
    assert value(text, "chorus_requests_total", route="files", status="404") == 1
    assert value(text, "chorus_request_duration_seconds_count", route="embeddings") == 1
    assert value(text, "chorus_requests_total", route="chat") == 0


FAILOVER = """
[[providers]]
id = "flaky"
driver = "openai"
base_url = "{up}"
models = ["flaky-model"]
retries = 1
retry_backoff = 0.01
retry_backoff_max = 0.05
breaker_failures = 2
breaker_cooldown_seconds = 60

[[providers]]
id = "backup"
driver = "openai"
base_url = "{up}"
models = ["backup-model"]

[[bots]]
id = "failsafe"
workspace = "acme"
model = "flaky/flaky-model"
fallback_models = ["backup/backup-model"]
"""


def test_retries_fallbacks_and_circuits_are_counted(scripted_upstream: ScriptedUpstream) -> None:
    """The failover reports through the request's observation; the breaker's state is read at scrape time."""
    config = make_config(scripted_upstream.base_url, FAILOVER.format(up=scripted_upstream.base_url))
    with LiveServer(create_app(config)) as server, server.openai_client(ACME_KEY) as client:
        scripted_upstream.push(Error(503, "busy"), Reply("after a retry"))
        client.chat.completions.create(model="model/name=flaky/flaky-model", messages=[{"role": "user", "content": "hi"}])
        text = scrape(server.url)
        assert value(text, "chorus_retries_total", provider="flaky") == 1
        assert value(text, "chorus_circuit_open", provider="flaky") == 0
        # two failed attempts in a row open the circuit, then the backup answers
        scripted_upstream.push(Error(503, "busy"), Error(503, "still busy"), Reply("from the backup"))
        answer = client.chat.completions.create(model="bot/id=failsafe", messages=[{"role": "user", "content": "hi"}])
        assert answer.choices[0].message.content == "from the backup"
        text = scrape(server.url)
    assert value(text, "chorus_circuit_opens_total", provider="flaky") == 1
    assert value(text, "chorus_fallbacks_total", provider="flaky") == 1
    assert value(text, "chorus_circuit_open", provider="flaky") == 1
    assert value(text, "chorus_retries_total") == 1 + 1


def test_responses_and_conversations_are_observed(server: LiveServer, scripted_upstream: ScriptedUpstream) -> None:
    """``/v1/responses`` is observed like chat (target, status, tokens, stream or not); the stored-object
    routes are counted under their own route names."""
    scripted_upstream.push(
        Reply("hello", usage={"prompt_tokens": 7, "completion_tokens": 2, "total_tokens": 9}),
        Reply("streamed", usage={"prompt_tokens": 3, "completion_tokens": 1, "total_tokens": 4}),
    )
    with server.openai_client(ACME_KEY) as client:
        made = client.responses.create(model="model/name=up/gpt-test", input="hi")
        with client.responses.stream(model="bot/id=support", input="hi") as stream:
            assert stream.get_final_response().output_text == "streamed"
        client.responses.retrieve(made.id)
        with pytest.raises(openai.NotFoundError):
            client.responses.retrieve("resp_nope")
        client.conversations.create(metadata={"topic": "x"})
    text = scrape(server.url)
    assert value(text, "chorus_requests_total", route="responses", target_kind="model", provider="up", status="200") == 1
    assert value(text, "chorus_requests_total", route="responses", target_kind="bot", status="200") == 1
    assert value(text, "chorus_tokens_total", direction="input") == 7 + 3
    assert value(text, "chorus_tokens_total", direction="output", target_kind="bot") == 1
    # retrieve (200 and 404) and the conversation go through the routes' observation middleware
    assert value(text, "chorus_requests_total", status="404") == 1
    assert value(text, "chorus_requests_total", route="conversations", status="200") == 1


def test_limit_rejections_are_counted(scripted_upstream: ScriptedUpstream) -> None:
    """A 429 from a workspace's request limit shows in ``chorus_rejections_total{reason="rate_limit"}``."""
    config = make_config(scripted_upstream.base_url, '[[workspaces]]\nid = "tight"\napi_keys = ["sk-tight-key"]\n'
                                                     'limits = { rpm = 1 }\n')
    scripted_upstream.push(Reply("one"))
    with LiveServer(create_app(config)) as live, live.openai_client("sk-tight-key") as client:
        client.chat.completions.create(model="model/name=up/gpt-test", messages=[{"role": "user", "content": "hi"}])
        with pytest.raises(openai.RateLimitError):
            client.chat.completions.create(model="model/name=up/gpt-test", messages=[{"role": "user", "content": "hi"}])
        text = scrape(live.url)
    assert value(text, "chorus_rejections_total", reason="rate_limit") == 1
    assert value(text, "chorus_requests_total", route="chat", status="429") == 1


def test_cost_from_configured_prices_is_exported(scripted_upstream: ScriptedUpstream) -> None:
    """``chorus_cost_usd_total`` moves by what the usage costs at the provider's configured prices."""
    config = make_config(scripted_upstream.base_url, '[[providers]]\nid = "priced"\ndriver = "openai"\n'
                         f'base_url = "{scripted_upstream.base_url}"\nmodels = ["gpt-test"]\nretries = 0\n'
                         'prices = { "gpt-test" = { input = 2.0, output = 8.0 } }\n')
    scripted_upstream.push(Reply("hi", usage={"prompt_tokens": 1000, "completion_tokens": 500, "total_tokens": 1500}))
    with LiveServer(create_app(config)) as live, live.openai_client(ACME_KEY) as client:
        client.chat.completions.create(model="model/name=priced/gpt-test", messages=[{"role": "user", "content": "hi"}])
        text = scrape(live.url)
    assert abs(value(text, "chorus_cost_usd_total", provider="priced") - (1000 * 2.0 + 500 * 8.0) / 1e6) < 1e-12
