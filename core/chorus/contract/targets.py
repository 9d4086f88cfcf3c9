"""What a ``model`` selector resolves to, and the built-in selector grammar.

Grammar (see ``docs/selectors.md``)::

    model/name=<provider>/<model>   a model of one provider
    model/name=<model>              the first provider listing <model>, else the first "*" provider
    model/name=<a>,<b>,...          a fallback chain: <a>, then <b> when <a> still fails (each as above)
    bot/id=<id>                     a bot of the caller's workspace

Anything else is offered to plugins through ``resolve_target``; if none claims it the client gets a
404 ``model_not_found`` whose message lists these forms.
"""

from __future__ import annotations

from chorus.contract.context import Target
from chorus.contract.errors import ModelNotFound

__all__ = ["BOT_PREFIX", "MODEL_PREFIX", "Target", "unknown_target"]


MODEL_PREFIX = "model/name="
BOT_PREFIX = "bot/id="


def unknown_target(selector: str) -> ModelNotFound:
    """The single 404 for anything that does not resolve (missing and foreign look the same)."""
    return ModelNotFound(
        f"The model {selector!r} does not exist or you do not have access to it. "
        f"Use 'model/name=<provider>/<model>', 'model/name=<model>', a fallback chain "
        f"'model/name=<provider>/<model>,<provider>/<model>', 'bot/id=<bot id>' or "
        f"'conversation/id=<conversation id>' "
        f"(GET /v1/models lists what this key can use).",
        param="model",
    )
