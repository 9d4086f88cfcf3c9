"""The built-in selector grammar: ``model/name=...`` and ``bot/id=...`` (see ``docs/selectors.md``)."""

from __future__ import annotations

from chorus import hookimpl
from chorus.registry import Registry, Workspace
from chorus.targets import BOT_PREFIX, MODEL_PREFIX, Target


@hookimpl(trylast=True)
def resolve_target(selector: str, workspace: Workspace, registry: Registry) -> Target | None:
    """Resolve the built-in selector kinds; ``None`` for anything else."""
    if selector.startswith(MODEL_PREFIX):
        name = selector[len(MODEL_PREFIX) :]
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
        return Target(selector=selector, kind="bot", provider=provider, model=model, bot=bot)
    return None
