"""The plugin manager: pluggy for hooks, stevedore for named drivers, one place for both.

Entry point groups:

* ``chorus.plugins`` — modules or objects with ``@hookimpl`` functions (see :mod:`chorus.hookspecs`).
* ``chorus.providers``, ``chorus.vector_stores``, ``chorus.search_engines``, ``chorus.tools`` —
  driver classes chosen by name in configuration.

A plugin that fails to import is recorded in :attr:`PluginManager.failures` and skipped, never
fatal. ``CHORUS_PLUGINS`` (allow-list) and ``CHORUS_DISABLE_PLUGINS`` (block-list) are
comma-separated entry point or distribution names; they apply to every group.
"""

from __future__ import annotations

import inspect
import logging
import os
from collections.abc import Mapping
from importlib import metadata
from typing import Any

import msgspec
import pluggy
from stevedore import ExtensionManager, NamedExtensionManager

from chorus import hookspecs
from chorus.errors import PluginError
from chorus.plugins.markers import PROJECT

log = logging.getLogger("chorus.plugins")

HOOK_GROUP = "chorus.plugins"
DRIVER_GROUPS: dict[str, str] = {
    "providers": "chorus.providers",
    "vector_stores": "chorus.vector_stores",
    "search_engines": "chorus.search_engines",
    "tools": "chorus.tools",
}
SYNC_ONLY_HOOKS = frozenset({"resolve_target"})


class PluginFailure(msgspec.Struct, frozen=True, kw_only=True):
    """A plugin that could not be loaded, and why."""

    group: str
    name: str
    distribution: str
    error: str


class PluginInfo(msgspec.Struct, frozen=True, kw_only=True):
    """One loaded entry point, as ``chorus plugins`` lists it."""

    group: str
    name: str
    distribution: str
    version: str
    hooks: list[str] = []


def _names(value: str | None) -> set[str]:
    return {part.strip() for part in (value or "").split(",") if part.strip()}


def _dist(ep: metadata.EntryPoint) -> tuple[str, str]:
    dist = getattr(ep, "dist", None)
    if dist is None:
        return "?", "?"
    return dist.metadata["Name"] or "?", dist.version or "?"


class PluginManager:
    """Loads plugins and drivers; exposes ``hook`` for the pipeline."""

    def __init__(self, *, load_entrypoints: bool = True, env: Mapping[str, str] | None = None) -> None:
        env = os.environ if env is None else env
        self._allow = _names(env.get("CHORUS_PLUGINS"))
        self._block = _names(env.get("CHORUS_DISABLE_PLUGINS"))
        self._pm = pluggy.PluginManager(PROJECT)
        self._pm.add_hookspecs(hookspecs)
        self.failures: list[PluginFailure] = []
        self.loaded: list[PluginInfo] = []
        self._drivers: dict[str, dict[str, type]] = {}
        self._all_loaded: set[str] = set()
        self._attempted: set[tuple[str, str]] = set()
        if load_entrypoints:
            self._load_hook_plugins()

    # -- pluggy ---------------------------------------------------------------------------------

    @property
    def hook(self) -> Any:
        """The pluggy hook relay (``pm.hook.<name>(**kwargs)``)."""
        return self._pm.hook

    def register(self, plugin: object, name: str | None = None) -> str:
        """Register a hook implementation object; returns its name. Checks sync-only hooks."""
        registered = self._pm.register(plugin, name=name)
        if registered is None:
            raise PluginError(f"plugin {name!r} is blocked or already registered")
        for hook_name in SYNC_ONLY_HOOKS:
            for impl in getattr(self._pm.hook, hook_name).get_hookimpls():
                if impl.plugin is plugin and inspect.iscoroutinefunction(impl.function):
                    self._pm.unregister(plugin)
                    raise PluginError(
                        f"plugin {registered!r}: {hook_name} must be synchronous (it stops at the first result)"
                    )
        return registered

    def unregister(self, name: str) -> None:
        """Remove a plugin registered under ``name``."""
        self._pm.unregister(name=name)

    def implements(self, hook_name: str) -> bool:
        """Whether any plugin implements ``hook_name`` (checked once at startup, not per request)."""
        return bool(getattr(self._pm.hook, hook_name).get_hookimpls())

    def hooks_of(self, plugin_name: str) -> list[str]:
        """Names of the hooks a registered plugin implements."""
        plugin = self._pm.get_plugin(plugin_name)
        if plugin is None:
            return []
        return sorted(caller.name for caller in self._pm.get_hookcallers(plugin) or [])

    def _enabled(self, ep: metadata.EntryPoint) -> bool:
        dist_name, _ = _dist(ep)
        keys = {ep.name, dist_name}
        if self._block & keys:
            return False
        return not self._allow or bool(self._allow & keys)

    def _load_hook_plugins(self) -> None:
        for ep in metadata.entry_points(group=HOOK_GROUP):
            if not self._enabled(ep):
                continue
            dist_name, version = _dist(ep)
            try:
                plugin = ep.load()
                name = self.register(plugin, name=ep.name)
            except Exception as exc:  # a broken plugin must never stop the server
                self._fail(HOOK_GROUP, ep.name, dist_name, exc)
                continue
            self.loaded.append(
                PluginInfo(group=HOOK_GROUP, name=ep.name, distribution=dist_name, version=version, hooks=self.hooks_of(name))
            )

    def _fail(self, group: str, name: str, distribution: str, exc: BaseException) -> None:
        error = f"{type(exc).__name__}: {exc}"
        log.warning("plugin %s (%s, group %s) failed to load and is skipped: %s", name, distribution, group, error)
        self.failures.append(PluginFailure(group=group, name=name, distribution=distribution, error=error))

    # -- stevedore ------------------------------------------------------------------------------

    def drivers(self, kind: str) -> dict[str, type]:
        """All loadable drivers of ``kind`` (``providers``, ``tools``, ...) by entry point name."""
        if kind not in self._all_loaded:
            self._load_drivers(kind, None)
            self._all_loaded.add(kind)
        return self._drivers.setdefault(kind, {})

    def _load_drivers(self, kind: str, only: str | None) -> None:
        """Import the entry points of ``kind`` (just ``only`` when given) not imported yet."""
        group = DRIVER_GROUPS[kind]
        found = self._drivers.setdefault(kind, {})
        eps = {
            ep.name: ep for ep in metadata.entry_points(group=group)
            if self._enabled(ep) and (only is None or ep.name == only) and ep.name not in found
            and (group, ep.name) not in self._attempted
        }
        if not eps:
            return
        self._attempted.update((group, name) for name in eps)

        def on_failure(_manager: Any, entrypoint: Any, exc: BaseException) -> None:
            dist_name = _dist(eps[entrypoint.name])[0] if entrypoint.name in eps else "?"
            self._fail(group, entrypoint.name, dist_name, exc)

        # stevedore memoises entry points per namespace for the process; a new manager must see
        # what is installed now (plugins installed since, test environments).
        ExtensionManager.ENTRY_POINT_CACHE.pop(group, None)
        manager = NamedExtensionManager(
            group,
            names=sorted(eps),
            invoke_on_load=False,
            on_load_failure_callback=on_failure,
            on_missing_entrypoints_callback=lambda names: None,
        )
        for ext in manager:
            found[ext.name] = ext.plugin
            dist_name, version = _dist(eps[ext.name]) if ext.name in eps else ("?", "?")
            self.loaded.append(PluginInfo(group=group, name=ext.name, distribution=dist_name, version=version))

    def register_driver(self, kind: str, name: str, driver: type) -> None:
        """Add a driver without an entry point (custom builds, tests); it wins over one of the same name."""
        self._drivers.setdefault(kind, {})[name] = driver
        self.loaded.append(PluginInfo(group=DRIVER_GROUPS[kind], name=name, distribution="(registered)", version="-"))

    def driver(self, kind: str, name: str) -> type:
        """The driver class ``name`` of ``kind``, importing only that entry point.

        A clear error lists the installed ones when it is missing.
        """
        found = self._drivers.setdefault(kind, {})
        if name not in found:
            self._load_drivers(kind, name)
        if name in found:
            return found[name]
        found = self.drivers(kind)
        failed = [f for f in self.failures if f.group == DRIVER_GROUPS[kind] and f.name == name]
        if failed:
            raise PluginError(f"{kind} driver {name!r} is installed but failed to load: {failed[0].error}")
        available = ", ".join(sorted(found)) or "none"
        raise PluginError(
            f"no {kind} driver named {name!r} is installed (entry point group {DRIVER_GROUPS[kind]}; "
            f"installed: {available})"
        )

    def describe(self) -> list[PluginInfo]:
        """Every loaded entry point across all groups (loads all driver groups)."""
        for kind in DRIVER_GROUPS:
            self.drivers(kind)
        return list(self.loaded)
