"""The registry: provider instances, workspaces, bots, skillsets and keys, built once at startup.

Implements :class:`chorus.contract.context.Registry`, the view hooks receive.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import TYPE_CHECKING

from chorus.contract.config import BotConfig, Config, WorkspaceConfig
from chorus.contract.context import Workspace
from chorus.contract.errors import ConfigError
from chorus.contract.providers import ProviderDriver
from chorus.runtime.failover import Failover, GuardedProvider
from chorus.runtime.keys import KeyRing

if TYPE_CHECKING:
    from chorus.contract.search import SearchEngineDriver
    from chorus.runtime.access import Access
    from chorus.runtime.knowledge.service import Knowledge
    from chorus.runtime.skillsets import Skillset


class Registry:
    """Read-only lookups used on the hot path. All lookups of tenant objects take a workspace.

    Providers are handed out guarded (:class:`~chorus.runtime.failover.GuardedProvider`: retries and
    circuit breaker per their failover policy); ``failover`` runs fallbacks and keeps the counters.
    """

    def __init__(
        self,
        *,
        providers: Iterable[ProviderDriver],
        workspaces: Iterable[WorkspaceConfig],
        bots: Iterable[BotConfig],
        keyring: KeyRing,
        skillsets: Iterable[Skillset] = (),
        failover: Failover | None = None,
    ) -> None:
        self.failover = failover = failover or Failover()
        self.providers: dict[str, GuardedProvider] = {p.id: failover.guard(p) for p in providers}
        self._skillsets: dict[tuple[str, str], Skillset] = {(s.config.workspace, s.id): s for s in skillsets}
        self.workspaces: dict[str, Workspace] = {w.id: Workspace(id=w.id, name=w.name) for w in workspaces}
        self._bots: dict[tuple[str, str], BotConfig] = {(b.workspace, b.id): b for b in bots}
        self.keyring = keyring
        self.knowledge: Knowledge | None = None
        self.search_engines: dict[str, SearchEngineDriver] = {}
        self.access: Access | None = None  # managed keys, limits, usage (set by Services)

    @classmethod
    def from_config(
        cls, config: Config, providers: Iterable[ProviderDriver], keyring: KeyRing, skillsets: Iterable[Skillset] = ()
    ) -> Registry:
        """Build the registry and check that every bot's model resolves."""
        registry = cls(
            providers=providers, workspaces=config.workspaces, bots=config.bots, keyring=keyring, skillsets=skillsets
        )
        for i, bot in enumerate(config.bots):
            if registry.find_model(bot.model) is None:
                raise ConfigError(
                    f"bots[{i}].model {bot.model!r} matches no provider "
                    f"(use '<provider id>/<model>' or a model a provider lists)"
                )
            for j, name in enumerate(bot.fallback_models):
                if "," in name or registry.find_model(name) is None:
                    raise ConfigError(
                        f"bots[{i}].fallback_models[{j}] {name!r} matches no provider "
                        f"(use '<provider id>/<model>' or a model a provider lists, one per list entry)"
                    )
        return registry

    def find_model(self, name: str) -> tuple[GuardedProvider, str] | None:
        """Resolve ``<provider>/<model>`` or a bare model name to ``(provider, upstream model)``."""
        head, sep, rest = name.partition("/")
        if sep and head in self.providers:
            return (self.providers[head], rest) if rest else None
        for provider in self.providers.values():
            if name in provider.settings.models:
                return provider, name
        for provider in self.providers.values():
            if "*" in provider.settings.models:
                return provider, name
        return None

    def bot(self, workspace: str, bot_id: str) -> BotConfig | None:
        """The bot ``bot_id`` of ``workspace``; another workspace's bot is ``None`` too."""
        return self._bots.get((workspace, bot_id))

    def bots(self, workspace: str) -> list[BotConfig]:
        """All bots of ``workspace`` in configuration order."""
        return [b for (ws, _), b in self._bots.items() if ws == workspace]

    def skillsets_of(self, bot: BotConfig) -> list[Skillset]:
        """The bot's skillsets, in the order the bot lists them (same workspace only)."""
        found = (self._skillsets.get((bot.workspace, name)) for name in bot.skillsets)
        return [s for s in found if s is not None]

    def all_skillsets(self) -> list[Skillset]:
        """Every skillset of every workspace (for startup and shutdown)."""
        return list(self._skillsets.values())
