"""``answer_style = "quote"`` without a model: passages, their ranking, and when the driver quotes."""

from __future__ import annotations

from typing import Any

import pytest
from chorus_provider_llamacpp import LlamaCppProvider, LlamaCppSettings
from chorus_provider_llamacpp.quote import RRF_K, best_passage, passages, stem, terms

from chorus.config import convert
from chorus.context import Source
from chorus.schemas import ChatCompletionRequest, Message

SERVER = Source(
    title="Configuration › [server]",
    url="https://docs.test/configuration#server",
    text=(
        "The server reads one TOML file. Every key is optional; unknown keys are\n"
        "rejected at startup.\n\n"
        "| key | default | meaning |\n"
        "| --- | --- | --- |\n"
        "| `port` | `8000` | listen port (`--port` overrides) |\n"
        "| `workers` | `1` | worker processes |\n\n"
        "- `chorus config check` validates a file without serving.\n"
        "- `chorus keys new` prints a new key.\n\n"
        "```sh\nchorus serve --port 9000\n```\n"
    ),
)
HOURS = Source(title="Acme › Opening hours", text="Support is open Monday to Friday, 9am to 5pm.")


def test_passages_are_sentences_list_items_table_rows_and_code_lines() -> None:
    assert passages(SERVER.text) == [
        "The server reads one TOML file.",
        "Every key is optional; unknown keys are rejected at startup.",  # hard-wrapped lines joined
        "`port` — `8000` — listen port (`--port` overrides)",
        "`workers` — `1` — worker processes",
        "`chorus config check` validates a file without serving.",
        "`chorus keys new` prints a new key.",
        "chorus serve --port 9000",
    ]


def test_headings_and_passages_without_a_word_are_not_quotable() -> None:
    assert passages("# Title\n\nText here.\n\n---\n") == ["Text here."]


def test_terms_drop_stop_words_and_share_a_stem_across_inflections() -> None:
    assert terms("Which command validates the configuration?") == ["command", "validat", "configur"]
    assert stem("validated") == stem("validates") == "validat"
    assert stem("configure") == stem("configuration") == "configur"


def test_the_passage_stating_the_fact_wins() -> None:
    assert best_passage("What is the default port?", [SERVER]).text == (  # type: ignore[union-attr]
        "`port` — `8000` — listen port (`--port` overrides)"
    )
    assert best_passage("Which command validates a file?", [SERVER]).text == (  # type: ignore[union-attr]
        "`chorus config check` validates a file without serving."
    )
    found = best_passage("When is support open?", [SERVER, HOURS])
    assert found is not None and (found.source, found.text) == (1, HOURS.text)


def test_a_title_word_helps_but_a_passage_must_share_a_word_itself() -> None:
    # "hours" only in the title: no passage shares a word with the question
    assert best_passage("Hours?", [HOURS]) is None
    # with a shared word, the title's words add to the score
    found = best_passage("Is support open on Monday?", [SERVER, HOURS])
    assert found is not None and found.source == 1


def test_no_quote_without_informative_words_or_sources() -> None:
    assert best_passage("Is it what it is?", [SERVER]) is None
    assert best_passage("What is the default port?", []) is None


CHECK = "`chorus config check` validates a file without serving."
TOML = "The server reads one TOML file."


def favouring(scores: dict[str, float]) -> Any:
    def similarity(question: str, texts: Any) -> list[float]:
        return [scores.get(t, 0.0) for t in texts]
    return similarity


def test_a_similarity_is_fused_with_bm25_by_reciprocal_rank() -> None:
    question = "Which command validates a file?"
    assert best_passage(question, [SERVER]).text == CHECK  # type: ignore[union-attr]  # BM25: first, TOML second
    agreeing = best_passage(question, [SERVER], similarity=favouring({CHECK: 1.0}))
    assert agreeing is not None and agreeing.text == CHECK
    assert agreeing.score == pytest.approx(2 / (RRF_K + 1))
    # the similarity puts the BM25 runner-up first and the BM25 winner last: the runner-up wins
    disagreeing = best_passage(question, [SERVER], similarity=favouring({TOML: 1.0, CHECK: -1.0}))
    assert disagreeing is not None and disagreeing.text == TOML
    assert disagreeing.score == pytest.approx(1 / (RRF_K + 2) + 1 / (RRF_K + 1))


def test_a_similarity_never_quotes_for_a_question_no_passage_shares_a_word_with() -> None:
    assert best_passage("Who are you?", [SERVER], similarity=favouring({TOML: 1.0})) is None


def settings(**extra: Any) -> LlamaCppSettings:
    result: LlamaCppSettings = convert({"id": "local", "driver": "llamacpp", **extra}, LlamaCppSettings, "providers[0]")
    return result


class Ctx:
    def __init__(self, *sources: Source) -> None:
        self.sources = list(sources)


def body(*messages: Message) -> ChatCompletionRequest:
    return ChatCompletionRequest(model="gemma-3-270m", messages=list(messages))


QUESTION = Message(role="user", content="When is support open?")


def test_the_driver_quotes_only_in_quote_style_with_sources_and_a_user_question() -> None:
    quoting = LlamaCppProvider(settings(answer_style="quote", quote_ranking="bm25"))
    assert quoting.quote(body(QUESTION), Ctx(HOURS)) == HOURS.text  # type: ignore[arg-type]
    assert quoting.quote(body(QUESTION), Ctx()) is None  # type: ignore[arg-type]
    assert quoting.quote(body(QUESTION), None) is None
    tool_result = Message(role="tool", content="42", tool_call_id="c1")
    assert quoting.quote(body(QUESTION, tool_result), Ctx(HOURS)) is None  # type: ignore[arg-type]
    assert quoting.quote(body(Message(role="user", content="Hello there")), Ctx(HOURS)) is None  # type: ignore[arg-type]
    generating = LlamaCppProvider(settings())
    assert (generating.settings.answer_style, generating.settings.quote_ranking) == ("generate", "hybrid")
    assert generating.quote(body(QUESTION), Ctx(HOURS)) is None  # type: ignore[arg-type]
