"""Unit tests of small pure pieces: keys, SSE parsing, legacy translation, layering."""

from __future__ import annotations

from collections.abc import AsyncIterator

import pytest

from chorus.contract.context import Source
from chorus.contract.schemas import Message
from chorus.net.sse import iter_sse_data
from chorus.runtime import legacy
from chorus.runtime.keys import KeyRing, digest, new_key
from chorus.runtime.layering import layer_messages


def test_keys_and_ring() -> None:
    key = new_key()
    assert key.startswith("sk-chorus-") and len(key) > 40
    assert new_key() != key
    ring = KeyRing([(key, "a"), (digest("other"), "b")])
    assert ring.workspace_for(key) == "a"
    assert ring.workspace_for("other") == "b"
    assert ring.workspace_for("nope") is None
    assert ring.workspace_for(digest("other")) is None  # the digest itself is not a key


async def _chunks(*parts: bytes) -> AsyncIterator[bytes]:
    for part in parts:
        yield part


@pytest.mark.parametrize(
    "parts",
    [
        (b'data: {"a":1}\n\ndata: {"b":2}\n\ndata: [DONE]\n\n',),
        (b'data: {"a"', b':1}\r\n\r\n: keep-alive\n\nevent: x\ndata: {"b":2}\n', b"\ndata: [DONE]"),
        tuple(bytes([c]) for c in b'data:{"a":1}\n\ndata: {"b":2}\n\ndata: [DONE]\n\n'),
        tuple(bytes([c]) for c in b'data:{"a":1}\r\n\r\ndata: {"b":2}\r\n\r\ndata: [DONE]\r\n\r\n'),
        (b'id: 1\r\ndata: {"a":1}\r\n\r\n\r\n\ndata: {"b":2}\r', b'\n\r\ndata: [DONE]\r\n',),
    ],
)
async def test_sse_parser_handles_any_split(parts: tuple[bytes, ...]) -> None:
    assert [d async for d in iter_sse_data(_chunks(*parts))] == [b'{"a":1}', b'{"b":2}', b"[DONE]"]


async def test_sse_parser_joins_multi_line_data_and_keeps_empty_data() -> None:
    stream = b"data: first\ndata:second\ndata: \n\ndata:\n\ndata\n\n: comment\ndata: last"
    assert [d async for d in iter_sse_data(_chunks(stream))] == [b"first\nsecond\n", b"", b"last"]


def test_legacy_history_pairs_ids() -> None:
    messages = [
        Message(role="assistant", content=None, function_call={"name": "f", "arguments": "{}"}),
        Message(role="function", name="f", content="r1"),
        Message(role="assistant", content=None, function_call={"name": "g", "arguments": "{}"}),
        Message(role="function", name="g", content="r2"),
    ]
    assert legacy.uses_legacy_messages(messages)
    out = legacy.translate_messages(messages)
    assert [m.role for m in out] == ["assistant", "tool", "assistant", "tool"]
    assert out[1].tool_call_id == out[0].tool_calls[0]["id"]  # type: ignore[index]
    assert out[3].tool_call_id == out[2].tool_calls[0]["id"]  # type: ignore[index]
    assert out[0].tool_call_id != out[2].tool_calls[0]["id"]  # type: ignore[index]


def test_legacy_delta_and_message() -> None:
    delta = {"tool_calls": [{"index": 0, "id": "c", "function": {"name": "f", "arguments": ""}}]}
    legacy.to_legacy_delta(delta)
    assert delta == {"function_call": {"name": "f", "arguments": ""}}
    message = {"role": "assistant", "content": None, "tool_calls": [{"id": "c", "function": {"name": "f", "arguments": "{}"}}]}
    legacy.to_legacy_message(message)
    assert message == {"role": "assistant", "content": None, "function_call": {"name": "f", "arguments": "{}"}}


def test_layering_bot_keeps_later_system_messages_in_place() -> None:
    messages = [
        Message(role="system", content="A"),
        Message(role="user", content="u1"),
        Message(role="system", content="mid-conversation note"),
    ]
    out = layer_messages(messages, backstory="B", parts=["P"], sources=[Source(text="T", title="S")])
    assert out[0].content == "B\n\nP\n\n" + out[0].content.split("\n\n", 2)[2]  # type: ignore[union-attr]
    assert out[0].content.endswith("[1] S\nT\n\nA")  # type: ignore[union-attr]
    assert [m.role for m in out] == ["system", "user", "system"]


def test_layering_model_untouched_without_parts() -> None:
    messages = [Message(role="developer", content="D"), Message(role="user", content="u")]
    assert layer_messages(messages, backstory=None, parts=[], sources=[]) is messages


class _Early:
    from chorus import hookimpl as _hookimpl

    @_hookimpl(tryfirst=True)
    def build_system_prompt(self, ctx: object) -> str:
        return "early"

    @_hookimpl
    def resolve_target(self, selector: str) -> object:
        return "early-target" if selector == "x" else None


class _Late:
    from chorus import hookimpl as _hookimpl

    @_hookimpl(trylast=True)
    def build_system_prompt(self, ctx: object) -> str:
        return "late"

    @_hookimpl
    def post_process(self, ctx: object, payload: dict, chunk: bool) -> None:  # type: ignore[type-arg]
        payload["seen"] = payload.get("seen", 0) + 1


class _Plain:
    from chorus import hookimpl as _hookimpl

    @_hookimpl
    def build_system_prompt(self) -> None:
        return None

    @_hookimpl
    def resolve_target(self, selector: str, workspace: object) -> object:
        return "plain-target"


def test_hook_runner_matches_pluggy() -> None:
    """The pipeline's HookRunner gives exactly what ``pm.hook.<name>(...)`` gives, also after changes."""
    from chorus.plugins.manager import PluginManager

    pm = PluginManager(load_entrypoints=False)
    for name, plugin in (("late", _Late()), ("plain", _Plain()), ("early", _Early())):
        pm.register(plugin, name=name)
    prompt, resolve = pm.runner("build_system_prompt"), pm.runner("resolve_target")
    assert prompt(ctx=None) == pm.hook.build_system_prompt(ctx=None) == ["early", "late"]
    for selector in ("x", "y"):
        kwargs = {"selector": selector, "workspace": None, "registry": None}
        assert resolve(**kwargs) == pm.hook.resolve_target(**kwargs)
    assert resolve(selector="x", workspace=None, registry=None) == "early-target"
    payload: dict = {}  # type: ignore[type-arg]
    assert pm.runner("post_process")(ctx=None, payload=payload, chunk=True) == []
    assert payload == {"seen": 1}
    pm.unregister("early")  # the runner sees registration changes at once
    assert prompt(ctx=None) == pm.hook.build_system_prompt(ctx=None) == ["late"]
    assert resolve(selector="x", workspace=None, registry=None) == "plain-target"


def test_attribution_threshold_and_sentences() -> None:
    """``citations.attribute``: a sentence goes to the source with the largest share of its content
    words, when that share reaches the threshold; function words and word endings do not count."""
    from chorus.context import Source
    from chorus_plugins.citations import attribute, content_words

    assert content_words("How do I configure the datasets?") == {"config", "datase"}
    sources = [Source(text="Support is open Monday to Friday, 9am to 5pm.", title="Hours", url="u1"),
               Source(text="Returns are accepted within 30 days.", title="Returns", url="u2")]
    text = "Support is open Monday to Sunday. Returns: 30 days! I cannot tell."
    spans = [(a["url_citation"]["url"], text[a["url_citation"]["start_index"]:a["url_citation"]["end_index"]])
             for a in attribute(text, sources, 0.6)]
    assert spans == [("u1", "Support is open Monday to Sunday."), ("u2", "Returns: 30 days!")]
    # "support open monday sunday": 3 of 4 words in source 1 — attributed at 0.75, not above it
    assert [a["url_citation"]["url"] for a in attribute(text, sources, 0.75)] == ["u1", "u2"]
    assert [a["url_citation"]["url"] for a in attribute(text, sources, 0.8)] == ["u2"]
    assert attribute("", sources, 0.6) == [] and attribute(text, [], 0.6) == []
