"""Public import path. The OpenAI wire schemas Chorus decodes (``ChatCompletionRequest``, ``Message``).

The definitions live in :mod:`chorus.contract.schemas`; plugins import them from here."""

from chorus.contract.schemas import (
    OPENAI_FIELDS,
    UNSET,
    ChatCompletionRequest,
    Message,
    Wire,
    decode_body,
    decode_chat_request,
    extend_request,
    text_of,
    user_texts,
    validation_param,
)

__all__ = [
    "OPENAI_FIELDS",
    "UNSET",
    "ChatCompletionRequest",
    "Message",
    "Wire",
    "decode_body",
    "decode_chat_request",
    "extend_request",
    "text_of",
    "user_texts",
    "validation_param",
]
