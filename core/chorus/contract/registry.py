"""What a plugin can look up: the caller's workspace and the read-only registry behind it.

The runtime's :class:`chorus.runtime.registry.Registry` implements :class:`Registry`; hooks are
typed against these protocols so the contract never imports the runtime. Every lookup of a tenant
object takes a workspace id: another workspace's bot or skillset is ``None``, exactly like a
missing one.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import TYPE_CHECKING, Any, Protocol

import msgspec

if TYPE_CHECKING:
    import httpx

    from chorus.contract.config import BotConfig, SkillsetConfig
    from chorus.contract.documents import SearchHit
    from chorus.contract.providers import ProviderDriver
    from chorus.contract.search import SearchEngineDriver
    from chorus.contract.tools import ToolDriver, ToolSpec


class Workspace(msgspec.Struct, frozen=True, kw_only=True):
    """A tenant as seen by request handling."""

    id: str
    name: str = ""


class Skillset(Protocol):
    """A configured ``[[skillsets]]`` entry: its tools and the egress-guarded client they share."""

    @property
    def id(self) -> str: ...

    @property
    def config(self) -> SkillsetConfig: ...

    @property
    def http(self) -> httpx.AsyncClient: ...

    def specs(self) -> list[ToolSpec]:
        """Every tool, in configuration order."""
        ...

    def owner(self, name: str) -> ToolDriver | None:
        """The driver running tool ``name``, or ``None``."""
        ...


class Knowledge(Protocol):
    """Retrieval over the workspace's datasets (the configured vector store)."""

    async def search(self, workspace: str, datasets: list[str], query: str, *, k: int = 8,
                     filters: dict[str, Any] | None = None, min_score: float = 0.0) -> list[SearchHit]:
        """Best chunks of ``datasets`` (ids of ``workspace``) for ``query``, best first."""
        ...


class Registry(Protocol):
    """Providers, workspaces, bots, skillsets, search engines and knowledge, built once at startup."""

    @property
    def providers(self) -> Mapping[str, ProviderDriver]: ...

    @property
    def workspaces(self) -> Mapping[str, Workspace]: ...

    @property
    def search_engines(self) -> Mapping[str, SearchEngineDriver]: ...

    @property
    def knowledge(self) -> Knowledge | None: ...

    def find_model(self, name: str) -> tuple[ProviderDriver, str] | None:
        """Resolve ``<provider>/<model>`` or a bare model name to ``(provider, upstream model)``."""
        ...

    def bot(self, workspace: str, bot_id: str) -> BotConfig | None:
        """The bot ``bot_id`` of ``workspace``; another workspace's bot is ``None`` too."""
        ...

    def bots(self, workspace: str) -> list[BotConfig]:
        """All bots of ``workspace`` in configuration order."""
        ...

    def skillsets_of(self, bot: BotConfig) -> Sequence[Skillset]:
        """The bot's skillsets, in the order the bot lists them (same workspace only)."""
        ...
