"""Public import path. The OpenAI wire schemas Chorus decodes (``ChatCompletionRequest``, ``Message``).

The definitions live in :mod:`chorus.contract.schemas`; plugins import them from here."""

from chorus.contract.schemas import (  # noqa: F401 - re-exported
    OPENAI_FIELDS,
    ChatCompletionRequest,
    Message,
    UNSET,
    Wire,
    decode_body,
    decode_chat_request,
    extend_request,
    text_of,
    user_texts,
    validation_param,
)

__all__ = ['ChatCompletionRequest', 'Message', 'OPENAI_FIELDS', 'UNSET', 'Wire', 'decode_body', 'decode_chat_request', 'extend_request', 'text_of', 'user_texts', 'validation_param']
