"""The built-in selector grammar: ``model/name=...`` and ``bot/id=...`` (see ``docs/selectors.md``).

``model/name=a/x,b/y`` is a fallback chain: ``a/x`` answers, or ``b/y`` when ``a/x`` still fails after
its retries. A bot's ``fallback_models`` make the same chain behind ``bot/id=``.
"""

from __future__ import annotations

from chorus import hookimpl
from chorus.errors import ModelNotFound
from chorus.registry import Registry, Workspace
from chorus.targets import BOT_PREFIX, MODEL_PREFIX, Target


@hookimpl(trylast=True)
def resolve_target(selector: str, workspace: Workspace, registry: Registry) -> Target | None:
    """Resolve the built-in selector kinds; ``None`` for anything else."""
    if selector.startswith(MODEL_PREFIX):
        name = selector[len(MODEL_PREFIX) :]
        if "," in name:
            return _chain(selector, name, registry)
        found = registry.find_model(name) if name else None
        if found is None:
            return None
        provider, model = found
        return Target(selector=selector, kind="model", provider=provider, model=model)
    if selector.startswith(BOT_PREFIX):
        bot = registry.bot(workspace.id, selector[len(BOT_PREFIX) :])
        if bot is None:
            return None
        found = registry.find_model(bot.model)
        if found is None:  # checked at startup; kept for plugins that mutate the registry
            return None
        provider, model = found
        fallbacks = tuple(f for f in (registry.find_model(m) for m in bot.fallback_models) if f is not None)
        return Target(selector=selector, kind="bot", provider=provider, model=model, bot=bot, fallbacks=fallbacks)
    return None


def _chain(selector: str, names: str, registry: Registry) -> Target:
    """``model/name=a/x,b/y``: every entry must resolve, or the 404 names the one that does not."""
    candidates = []
    for name in names.split(","):
        name = name.strip()
        found = registry.find_model(name) if name else None
        if found is None:
            what = f"the entry {name!r}" if name else "an empty entry"
            raise ModelNotFound(
                f"The fallback chain {selector!r} has {what}, which is not a model you have access to. "
                f"Write 'model/name=<provider>/<model>,<provider>/<model>,...' (GET /v1/models lists the models).",
                param="model",
            )
        candidates.append(found)
    (provider, model), *fallbacks = candidates
    return Target(selector=selector, kind="model", provider=provider, model=model, fallbacks=tuple(fallbacks))
