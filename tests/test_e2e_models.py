"""``/v1/models``: what a key may use, in the OpenAI list shape; tenant isolation."""

from __future__ import annotations

import httpx
import openai
import pytest

from chorus.testing.config import ACME_KEY
from tests.openapi_spec import requires_spec, validate


def test_list_models_for_acme(client: openai.OpenAI) -> None:
    ids = [m.id for m in client.models.list()]
    assert ids == [
        "model/name=up/gpt-test",
        "model/name=up/shared-model",
        "model/name=slow/slow-model",
        "model/name=dead/dead-model",
        "bot/id=support",
    ]


def test_bot_entries_carry_name_description_capabilities(client: openai.OpenAI) -> None:
    bot = next(m for m in client.models.list() if m.id == "bot/id=support")
    extra = bot.model_dump()
    assert extra["owned_by"] == "acme"
    assert extra["name"] == "Acme Support"
    assert extra["description"] == "Answers questions about Acme orders"
    assert extra["capabilities"]["backstory"] is True


def test_other_workspace_sees_only_its_bots(globex: openai.OpenAI) -> None:
    ids = [m.id for m in globex.models.list()]
    assert "bot/id=rival" in ids and "bot/id=support" not in ids


def test_retrieve_model(client: openai.OpenAI) -> None:
    assert client.models.retrieve("bot/id=support").id == "bot/id=support"
    model = client.models.retrieve("model/name=up/gpt-test")
    assert (model.id, model.owned_by) == ("model/name=up/gpt-test", "up")
    # "*" providers are not advertised but resolve like chat requests do.
    assert client.models.retrieve("model/name=any-name").owned_by == "wild"


def test_foreign_bot_is_the_same_404_as_a_missing_one(client: openai.OpenAI, globex: openai.OpenAI) -> None:
    with pytest.raises(openai.NotFoundError) as foreign:
        globex.models.retrieve("bot/id=support")
    with pytest.raises(openai.NotFoundError) as missing:
        globex.models.retrieve("bot/id=nope")
    assert foreign.value.code == missing.value.code == "model_not_found"
    assert foreign.value.body["message"].replace("support", "X") == missing.value.body["message"].replace("nope", "X")  # type: ignore[index]


@requires_spec
def test_models_match_openai_schema(chorus_server) -> None:  # type: ignore[no-untyped-def]
    headers = {"authorization": f"Bearer {ACME_KEY}"}
    listing = httpx.get(chorus_server.url + "/v1/models", headers=headers).json()
    validate(listing, "ListModelsResponse")
    one = httpx.get(chorus_server.url + "/v1/models/bot/id=support", headers=headers).json()
    validate(one, "Model")
