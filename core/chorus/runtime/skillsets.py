"""Runtime skillsets: configured tool driver instances, their egress policy and HTTP client."""

from __future__ import annotations

import logging
from typing import TYPE_CHECKING

from chorus.contract.config import SkillsetConfig, convert
from chorus.contract.errors import ConfigError, PluginError
from chorus.contract.tools import ToolDriver, ToolSpec

if TYPE_CHECKING:
    import httpx

    from chorus.contract.egress import EgressPolicy
    from chorus.plugins.manager import PluginManager

log = logging.getLogger("chorus.skillsets")


class Skillset:
    """One ``[[skillsets]]`` entry: its tools by name and the guarded client they share."""

    def __init__(self, config: SkillsetConfig, drivers: list[ToolDriver], egress: EgressPolicy) -> None:
        self.config = config
        self.drivers = drivers
        self.egress = egress
        self._tools: dict[str, tuple[ToolDriver, ToolSpec]] = {}
        self._http: httpx.AsyncClient | None = None

    @property
    def id(self) -> str:
        return self.config.id

    async def start(self) -> None:
        """Start every driver and index its tools; duplicate tool names are a configuration error.

        A driver whose tool list changes later (:meth:`ToolDriver.tools_changed`) is re-indexed;
        a name that then clashes is logged and the tool listed first keeps it.
        """
        self._http = self.egress.client(timeout=self.config.tool_timeout)
        for driver in self.drivers:
            await driver.start()
            self._index(self._tools, driver, strict=True)
            driver.watch_tools(self._reindex)

    def _index(self, tools: dict[str, tuple[ToolDriver, ToolSpec]], driver: ToolDriver, *, strict: bool) -> None:
        """Add ``driver``'s tools to ``tools``; a name already there raises (``strict``) or is logged and skipped."""
        for spec in driver.tools():
            if spec.name in tools:
                if strict:
                    raise ConfigError(f"skillset {self.id!r}: two tools are named {spec.name!r}")
                log.warning("skillset %s: tool %s of %s clashes with another tool of that name; the first keeps it",
                            self.id, spec.name, driver.settings.name)
                continue
            tools[spec.name] = (driver, spec)

    def _reindex(self, changed: ToolDriver) -> None:
        tools: dict[str, tuple[ToolDriver, ToolSpec]] = {}
        for driver in self.drivers:
            self._index(tools, driver, strict=False)
        added, removed = sorted(tools.keys() - self._tools.keys()), sorted(self._tools.keys() - tools.keys())
        self._tools = tools  # one assignment: a request reads the old index or the new one
        log.info("skillset %s: %s changed its tools (added: %s; removed: %s)", self.id, changed.settings.name,
                 ", ".join(added) or "none", ", ".join(removed) or "none")

    async def aclose(self) -> None:
        """Stop every driver and close the HTTP client; keeps going past failures."""
        for driver in self.drivers:
            try:
                await driver.aclose()
            except Exception:  # shutting down: report, keep closing the rest
                log.exception("skillset %s: tool %s failed to close", self.id, driver.settings.name)
        if self._http is not None:
            await self._http.aclose()
            self._http = None

    @property
    def http(self) -> httpx.AsyncClient:
        """The egress-guarded client tools of this skillset use."""
        if self._http is None:
            raise RuntimeError(f"skillset {self.id!r} is not started")
        return self._http

    def specs(self) -> list[ToolSpec]:
        """Every tool of this skillset, in configuration order."""
        return [spec for _, spec in self._tools.values()]

    def owner(self, name: str) -> ToolDriver | None:
        """The driver running tool ``name``, if this skillset has it."""
        found = self._tools.get(name)
        return found[0] if found else None


def build_skillsets(configs: list[SkillsetConfig], pm: PluginManager) -> list[Skillset]:
    """Instantiate every skillset's tool drivers, validated by each driver's settings type."""
    skillsets: list[Skillset] = []
    if not configs:
        return skillsets
    from chorus.contract.egress import EgressPolicy

    for i, config in enumerate(configs):
        try:
            egress = EgressPolicy(config.egress_allow)
        except ValueError as exc:
            raise ConfigError(f"skillsets[{i}].{exc}") from None
        drivers: list[ToolDriver] = []
        for j, raw in enumerate(config.tools):
            where = f"skillsets[{i}].tools[{j}]"
            try:
                driver_cls = pm.driver("tools", str(raw["driver"]))
            except PluginError as exc:
                raise ConfigError(f"{where}: {exc}") from None
            settings = convert(raw, driver_cls.settings_type, where)
            try:
                drivers.append(driver_cls(settings, egress))
            except (ValueError, TypeError) as exc:
                raise ConfigError(f"{where}: {exc}") from None
        skillsets.append(Skillset(config, drivers, egress))
    return skillsets
