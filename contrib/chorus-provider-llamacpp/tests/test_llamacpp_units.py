"""Unit tests that need no model: prompt format, stop handling, settings and parameter mapping."""

from __future__ import annotations

from typing import Any

import msgspec
import pytest
from chorus_provider_llamacpp import LlamaCppProvider, LlamaCppSettings
from chorus_provider_llamacpp.model_file import ModelFileError, resolve_model_path
from chorus_provider_llamacpp.prompt import (
    BLANK_LINE,
    COMPLETION_STOPS,
    INTRO_AFTER_INSTRUCTIONS,
    INTRO_PLAIN,
    TURN_STOPS,
    render_completion,
    render_prompt,
    stop_sequences,
)
from chorus_provider_llamacpp.stops import RepeatGuard, StopFilter

from chorus.config import convert
from chorus.context import Source, render_sources
from chorus.errors import ConfigError, UpstreamError, UpstreamUnavailable
from chorus.schemas import ChatCompletionRequest, Message


def settings(**extra: Any) -> LlamaCppSettings:
    result: LlamaCppSettings = convert({"id": "local", "driver": "llamacpp", **extra}, LlamaCppSettings, "providers[0]")
    return result


def request(*messages: Message, **fields: Any) -> ChatCompletionRequest:
    return ChatCompletionRequest(model="gemma-3-270m", messages=list(messages), **fields)


# -- prompt format ---------------------------------------------------------------------------------


def test_system_prompt_becomes_the_preamble_and_the_prompt_ends_with_the_assistant_label() -> None:
    prompt = render_prompt(
        [
            Message(role="system", content="You are Ada, Acme's support agent."),
            Message(role="user", content="What is your name?"),
        ]
    )
    assert prompt == (
        "You are Ada, Acme's support agent.\n\n"
        f"{INTRO_AFTER_INSTRUCTIONS}\n\n"
        "User: What is your name?\n"
        "Assistant:"
    )


def test_without_instructions_the_plain_intro_is_used() -> None:
    assert render_prompt([Message(role="user", content="Hi")]) == f"{INTRO_PLAIN}\n\nUser: Hi\nAssistant:"


def test_every_role_is_rendered_as_a_turn() -> None:
    prompt = render_prompt(
        [
            Message(role="system", content="  Be brief.  "),
            Message(role="developer", content="Answer in English."),
            Message(role="user", content="Weather in Paris?"),
            Message(
                role="assistant",
                content=None,
                tool_calls=[
                    {"id": "c1", "type": "function", "function": {"name": "weather", "arguments": '{"city": "Paris"}'}}
                ],
            ),
            Message(role="tool", tool_call_id="c1", content="18C and sunny"),
            Message(role="assistant", content="It is 18C and sunny."),
            Message(role="system", content="Mention the date."),
            Message(role="function", name="legacy", content="done"),
            Message(role="user", content="Thanks\r\nbye"),
        ]
    )
    assert prompt == (
        "Be brief.\n\nAnswer in English.\n\n"
        f"{INTRO_AFTER_INSTRUCTIONS}\n\n"
        "User: Weather in Paris?\n"
        'Assistant: (called weather {"city": "Paris"})\n'
        "Tool: 18C and sunny\n"
        "Assistant: It is 18C and sunny.\n"
        "System: Mention the date.\n"
        "Tool: done\n"
        "User: Thanks\nbye\n"
        "Assistant:"
    )


def test_content_parts_contribute_their_text_only() -> None:
    prompt = render_prompt(
        [
            Message(role="system", content=[{"type": "text", "text": "You are Ada."}]),
            Message(
                role="user",
                content=[
                    {"type": "text", "text": "Look:"},
                    {"type": "image_url", "image_url": {"url": "https://example.com/x.png"}},
                    {"type": "text", "text": "what is it?"},
                ],
            ),
        ]
    )
    assert prompt.startswith("You are Ada.\n\n")
    assert prompt.endswith("User: Look:\nwhat is it?\nAssistant:")
    assert "example.com" not in prompt


def test_empty_and_odd_messages_do_not_crash() -> None:
    prompt = render_prompt(
        [
            Message(role="system", content=""),
            Message(role="user", content=[]),
            Message(role="assistant", refusal="I can't help with that."),
            Message(role="assistant", content=None, tool_calls=[{"id": "x"}, "junk"]),  # type: ignore[list-item]
        ]
    )
    assert prompt == f"{INTRO_PLAIN}\n\nUser:\nAssistant: I can't help with that.\nAssistant:\nAssistant:"


def test_stop_sequences_merge_turn_stops_blank_line_and_request_stops() -> None:
    assert stop_sequences(None, blank_line=True) == [*TURN_STOPS, BLANK_LINE]
    assert stop_sequences(None, blank_line=False) == list(TURN_STOPS)
    assert stop_sequences("END", blank_line=False) == [*TURN_STOPS, "END"]
    assert stop_sequences(["\nUser:", "", "x"], blank_line=True) == [*TURN_STOPS, BLANK_LINE, "x"]


# -- stop filter ------------------------------------------------------------------------------------


def feed_all(stops: list[str], pieces: list[str]) -> tuple[list[str], bool]:
    f = StopFilter(stops)
    out = [f.feed(p) for p in pieces]
    out.append(f.flush())
    return [o for o in out if o], f.stopped


def test_stop_filter_cuts_before_a_stop_split_across_pieces() -> None:
    out, stopped = feed_all(["\nUser:"], [" I'm", " Ada", ".", "\n", "Us", "er", ": more"])
    assert "".join(out) == "I'm Ada."
    assert stopped


def test_stop_filter_releases_a_false_alarm_and_strips_the_ends() -> None:
    out, stopped = feed_all(["\nUser:"], ["\n ", "Hi", "\n", "Use", " it", "  \n"])
    assert "".join(out) == "Hi\nUse it"
    assert not stopped


def test_stop_filter_matches_after_leading_whitespace_is_dropped() -> None:
    out, stopped = feed_all(["\n\n"], ["\n\n", "Hello", " there", "\n", "\n", "Next topic"])
    assert out == ["Hello", " there"]
    assert stopped


def test_stop_filter_never_emits_text_it_later_retracts() -> None:
    f = StopFilter(["STOP"])
    emitted = [f.feed(p) for p in ["ab", "cS", "T", "x", "ST", "OP", "tail"]]
    assert emitted == ["ab", "c", "", "STx", "", "", ""]
    assert f.stopped and f.flush() == ""


# -- completion style ---------------------------------------------------------------------------------

HOURS = Source(text="| day | hours |\n| --- | --: |\n| Monday | 9-5 |\nSupport is open on weekdays.",
               title="Acme › Hours", url="https://acme.test/hours")


def test_completion_prompt_moves_the_layered_sources_into_a_context() -> None:
    """The sources block Chorus layered into the system message becomes ``Context:``; the rest of the
    instructions stay, earlier turns are Question/Answer pairs, and the prompt ends with ``Answer:``."""
    system = "You are Ada.\n\n" + render_sources([HOURS]) + "\n\nAnswer in French."
    prompt = render_completion([
        Message(role="system", content=system),
        Message(role="user", content="Hello"),
        Message(role="assistant", content="Hi!\nHow can I help?"),
        Message(role="user", content="When is support\nopen?"),
    ], [HOURS])
    assert prompt == (
        "You are Ada.\n\nAnswer in French.\n\n"
        "Context:\nAcme › Hours\nday — hours\nMonday — 9-5\nSupport is open on weekdays.\n\n"
        "Question: Hello\nAnswer: Hi! How can I help?\nQuestion: When is support open?\nAnswer:"
    )


def test_completion_prompt_without_sources_or_instructions() -> None:
    assert render_completion([USER]) == "Question: Hi\nAnswer:"
    # sources the instructions do not hold (a plain model's own system text): kept, and a context added
    prompt = render_completion([Message(role="system", content="Be brief."), USER], [HOURS])
    assert prompt.startswith("Be brief.\n\nContext:\nAcme › Hours\n") and prompt.endswith("Question: Hi\nAnswer:")
    tool_turns = render_completion([
        USER,
        Message(role="assistant", content=None, tool_calls=[{"id": "c", "type": "function",
                                                             "function": {"name": "calc", "arguments": "{}"}}]),
        Message(role="tool", content="42", tool_call_id="c"),
    ])
    assert tool_turns == "Question: Hi\nAnswer: (called calc {})\nResult: 42\nAnswer:"


def test_completion_style_stops_at_the_end_of_the_line() -> None:
    assert stop_sequences(None, blank_line=True, style="completion") == ["\n"]
    assert stop_sequences(["END", "\n"], blank_line=True, style="completion") == ["\n", "END"]


async def test_the_driver_renders_its_prompt_style_with_the_request_sources() -> None:
    class Ctx:
        sources = [HOURS]

    body = request(Message(role="system", content=render_sources([HOURS])), USER)
    completion = LlamaCppProvider(settings()).render(body, Ctx())  # type: ignore[arg-type]
    assert completion.startswith("Context:\nAcme › Hours") and completion.endswith("Answer:")
    chat = LlamaCppProvider(settings(prompt_style="chat")).render(body, Ctx())  # type: ignore[arg-type]
    assert chat.endswith("User: Hi\nAssistant:") and "[1] Acme › Hours (https://acme.test/hours)" in chat


def _guarded(pieces: list[str]) -> tuple[list[str], bool]:
    guard = RepeatGuard()
    out = [guard.feed(p) for p in pieces]
    out.append(guard.flush())
    return out, guard.stopped


def test_repeat_guard_ends_a_loop_before_the_repeat_is_sent() -> None:
    out, stopped = _guarded(["I'm not", " sure.", " I'm", " not", " sure.", " I'm not sure."])
    assert "".join(out) == "I'm not sure." and stopped
    assert out[2:4] == ["", ""]  # a possible repeat is held back, not half-sent
    # same words, other case and punctuation: still a repeat
    assert _guarded(["Use bot/id=demo. ", "use BOT/ID=demo!"]) == (["Use bot/id=demo.", "", ""], True)
    # a repeat that is only complete when generation ends is dropped too
    assert _guarded(["Hello there. Hello again. Hello there"]) == (["Hello there. Hello again.", ""], True)


def test_repeat_guard_lets_different_sentences_flow() -> None:
    out, stopped = _guarded(["It is", " open.", " It is", " closed on Sunday.", " It is late"])
    assert "".join(out) == "It is open. It is closed on Sunday. It is late" and not stopped
    assert out[1] == " open." and out[2] == ""   # " It is" could start a repeat: held until it differs
    assert _guarded(["One line\nOne line\n"])[1]  # a line break ends a sentence too


# -- settings ---------------------------------------------------------------------------------------


def test_settings_defaults() -> None:
    s = settings()
    assert s.models == ["gemma-3-270m"]
    assert (s.model_path, s.cache_dir, s.n_ctx, s.n_threads, s.n_gpu_layers) == (None, None, 2048, None, 0)
    assert (s.default_max_tokens, s.default_temperature, s.default_top_p) == (256, 0.3, 0.95)
    assert (s.top_k, s.min_p, s.repeat_penalty, s.stop_at_blank_line) == (40, 0.05, 1.1, True)
    assert (s.prompt_style, s.repeat_last_n, s.stop_on_repeat) == ("completion", 64, True)
    assert LlamaCppProvider(s).advertised_models() == ["gemma-3-270m"]


def test_settings_reject_unknown_keys_and_bad_values() -> None:
    with pytest.raises(ConfigError, match="n_ctxx"):
        settings(n_ctxx=4096)
    with pytest.raises(ConfigError, match="n_ctx"):
        settings(n_ctx=0)
    with pytest.raises(ConfigError, match="default_max_tokens"):
        settings(default_max_tokens=0)


def test_settings_are_found_through_the_driver_class() -> None:
    assert LlamaCppProvider.settings_type is LlamaCppSettings


def test_base_url_or_api_key_is_a_config_error() -> None:
    with pytest.raises(ConfigError, match="in-process"):
        LlamaCppProvider(settings(base_url="http://127.0.0.1:8080/v1"))
    with pytest.raises(ConfigError, match="in-process"):
        LlamaCppProvider(settings(api_key="sk-x"))


# -- request mapping ---------------------------------------------------------------------------------

USER = Message(role="user", content="Hi")


def test_sampling_defaults_come_from_settings() -> None:
    p = LlamaCppProvider(settings(default_max_tokens=77, default_temperature=0.5, stop_at_blank_line=False,
                                  prompt_style="chat"))
    s = p._sampling(request(USER))
    assert (s.max_tokens, s.temperature, s.top_p, s.presence_penalty, s.frequency_penalty) == (77, 0.5, 0.95, 0.0, 0.0)
    assert s.stop == TURN_STOPS
    assert 0 <= s.seed < 0xFFFFFFFF
    assert LlamaCppProvider(settings())._sampling(request(USER)).stop == COMPLETION_STOPS


def test_sampling_honours_request_parameters() -> None:
    p = LlamaCppProvider(settings(prompt_style="chat"))
    s = p._sampling(
        request(
            USER,
            temperature=0,
            top_p=0.5,
            max_tokens=9,
            max_completion_tokens=5,
            stop="END",
            seed=42,
            presence_penalty=0.25,
            frequency_penalty=-0.5,
            tools=[{"type": "function", "function": {"name": "f", "parameters": {}}}],
            tool_choice="required",
        )
    )
    assert (s.temperature, s.top_p, s.max_tokens, s.seed) == (0.0, 0.5, 5, 42)
    assert (s.presence_penalty, s.frequency_penalty) == (0.25, -0.5)
    assert s.stop[-1] == "END" and BLANK_LINE in s.stop
    assert p._sampling(request(USER, max_tokens=9)).max_tokens == 9
    assert p._sampling(request(USER, temperature=-1, top_p=3)).temperature == 0.0
    assert p._sampling(request(USER, top_p=3)).top_p == 1.0
    assert p._sampling(request(USER, seed=-1)).seed == 0xFFFFFFFF - 1  # never llama.cpp's "random" value


@pytest.mark.parametrize(
    ("fields", "param"),
    [({"n": 2}, "n"), ({"max_tokens": 0}, "max_tokens"), ({"max_completion_tokens": -1}, "max_completion_tokens")],
)
def test_unsupported_values_are_400s_naming_the_parameter(fields: dict[str, Any], param: str) -> None:
    with pytest.raises(UpstreamError) as info:
        LlamaCppProvider(settings())._sampling(request(USER, **fields))
    assert info.value.status_code == 400
    assert info.value.param == param


async def test_stream_raises_parameter_errors_before_the_first_chunk() -> None:
    p = LlamaCppProvider(settings())
    with pytest.raises(UpstreamError) as info:
        await p.stream(request(USER, n=3, stream=True), None).__anext__()  # type: ignore[arg-type]
    assert info.value.param == "n"


async def test_requests_before_start_are_unavailable() -> None:
    p = LlamaCppProvider(settings())
    with pytest.raises(UpstreamUnavailable, match="not started"):
        await p.complete(request(USER), None)  # type: ignore[arg-type]


# -- model file -------------------------------------------------------------------------------------


def test_missing_model_path_is_reported_with_the_path(tmp_path: Any) -> None:
    missing = tmp_path / "nope.gguf"
    with pytest.raises(ModelFileError, match="model file not found: .*nope.gguf"):
        resolve_model_path(str(missing), None)


async def test_start_with_a_missing_model_is_upstream_unavailable(tmp_path: Any) -> None:
    p = LlamaCppProvider(settings(model_path=str(tmp_path / "nope.gguf")))
    with pytest.raises(UpstreamUnavailable) as info:
        await p.start()
    message = info.value.message
    assert message.startswith("provider 'local' could not load its model: model file not found:")
    assert "Traceback" not in message and "\n" not in message
    await p.aclose()  # nothing was started; closing is a no-op


def test_settings_roundtrip_through_msgspec() -> None:
    s = settings(model_path="/models/x.gguf", n_threads=4, models=["x", "y"])
    assert msgspec.to_builtins(s)["model_path"] == "/models/x.gguf"
    assert LlamaCppProvider(s).serves("y") and not LlamaCppProvider(s).serves("z")
