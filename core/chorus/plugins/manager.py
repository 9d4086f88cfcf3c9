"""The plugin manager: pluggy runs the hooks, stevedore loads every entry point (hook plugins and drivers).

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
from collections.abc import Callable, Mapping
from importlib import metadata
from typing import TYPE_CHECKING, Any, Literal, overload

import msgspec
import pluggy
from stevedore import ExtensionManager, NamedExtensionManager

from chorus.contract import hookspecs
from chorus.contract.errors import PluginError
from chorus.contract.markers import PROJECT

if TYPE_CHECKING:
    from chorus.contract.providers import ProviderDriver
    from chorus.contract.search import SearchEngineDriver
    from chorus.contract.tools import ToolDriver
    from chorus.contract.vectorstores import VectorStoreDriver

log = logging.getLogger("chorus.plugins")

HOOK_GROUP = "chorus.plugins"
DRIVER_GROUPS: dict[str, str] = {
    "providers": "chorus.providers",
    "vector_stores": "chorus.vector_stores",
    "search_engines": "chorus.search_engines",
    "tools": "chorus.tools",
}
SYNC_ONLY_HOOKS = {  # hooks whose implementations must not be coroutines, and why
    "resolve_target": "it stops at the first result",
    "request_fields": "it runs once at startup",
}


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


class HookRunner:
    """Calls one hook like ``pm.hook.<name>(**kwargs)`` does, with less per-call overhead.

    Same implementations, same order (pluggy's: last registered first, ``tryfirst``/``trylast``
    honoured), same arguments, same ``firstresult`` rule, same results and exceptions as pluggy's
    ``_multicall``: every implementation is called, nothing is skipped or cached but the *plan*
    (which functions to call with which argument names). The plan is checked against the hook's
    current implementations on every call, so plugins registered or removed later are seen at once.

    Only plain implementations take the short path. A hook with a wrapper (``wrapper`` or
    ``hookwrapper``), keyword-only implementation arguments, spec defaults or a historic spec, a
    call that does not pass exactly the spec's arguments, and a plugin manager with tracing or call
    monitoring on all go through pluggy itself.

    Why: pluggy's generic call (argument checks, copying the implementation list, the try/finally
    of wrapper support) is ~1 µs per call; the pipeline makes four or five hook calls per request
    and one ``post_process`` per streamed chunk.
    """

    __slots__ = ("_caller", "_exec", "_firstresult", "_nargs", "_plan", "_planned", "_pm")

    def __init__(self, pm: pluggy.PluginManager, caller: Any, hookexec: Any) -> None:
        self._caller = caller
        self._pm = pm
        self._exec = hookexec
        self._planned: list[Any] | None = None
        self._plan: tuple[tuple[Callable[..., Any], tuple[str, ...]], ...] | None = None
        spec = caller.spec
        self._firstresult = bool(spec.opts.get("firstresult", False)) if spec is not None else False
        self._nargs = len(spec.argnames) if spec is not None else -1

    def _replan(self, impls: list[Any]) -> None:
        self._planned = impls
        self._plan = None
        spec = self._caller.spec
        if (
            self._exec is None or spec is None or spec.kwargdefaults or self._caller.is_historic()
            or any(i.wrapper or i.hookwrapper or i.kwargnames for i in impls)
        ):
            return
        self._plan = tuple((i.function, tuple(i.argnames)) for i in reversed(impls))

    def __call__(self, **kwargs: Any) -> Any:
        impls = self._caller.get_hookimpls()
        if impls != self._planned:
            self._replan(impls)
        plan = self._plan
        if plan is None or len(kwargs) != self._nargs or getattr(self._pm, "_inner_hookexec", None) is not self._exec:
            return self._caller(**kwargs)
        results: list[Any] = []
        for function, argnames in plan:
            try:
                args = [kwargs[name] for name in argnames]
            except KeyError as exc:
                raise pluggy.HookCallError(f"hook call must provide argument {exc.args[0]!r}") from exc
            res = function(*args)
            if res is not None:
                results.append(res)
                if self._firstresult:
                    return res
        return None if self._firstresult else results


class PluginManager:
    """Loads plugins and drivers; exposes ``hook`` for the pipeline."""

    def __init__(self, *, load_entrypoints: bool = True, env: Mapping[str, str] | None = None) -> None:
        env = os.environ if env is None else env
        self._allow = _names(env.get("CHORUS_PLUGINS"))
        self._block = _names(env.get("CHORUS_DISABLE_PLUGINS"))
        self._pm = pluggy.PluginManager(PROJECT)
        self._pm.add_hookspecs(hookspecs)
        self._hookexec = getattr(self._pm, "_inner_hookexec", None)  # pluggy's own, before any tracing
        self.failures: list[PluginFailure] = []
        self.loaded: list[PluginInfo] = []
        self._drivers: dict[str, dict[str, type[Any]]] = {}
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
                        f"plugin {registered!r}: {hook_name} must be synchronous ({SYNC_ONLY_HOOKS[hook_name]})"
                    )
        return registered

    def unregister(self, name: str) -> None:
        """Remove a plugin registered under ``name``."""
        self._pm.unregister(name=name)

    def runner(self, hook_name: str) -> HookRunner:
        """A :class:`HookRunner` for ``hook_name``: same calls and results as ``hook.<name>``, cheaper."""
        return HookRunner(self._pm, getattr(self._pm.hook, hook_name), self._hookexec)

    def collect(self, hook_name: str) -> list[tuple[str, Any]]:
        """Call ``hook_name`` (no arguments) on each implementation; ``(plugin name, result)`` pairs.

        For startup hooks whose results must be attributed to a plugin (``request_fields``).
        """
        found: list[tuple[str, Any]] = []
        for impl in reversed(getattr(self._pm.hook, hook_name).get_hookimpls()):
            result = impl.function()
            if result is not None:
                found.append((impl.plugin_name, result))
        return found

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
        for name, plugin, (dist_name, version) in self._import(HOOK_GROUP, None, skip=set()):
            try:
                registered = self.register(plugin, name=name)
            except Exception as exc:  # a plugin that cannot be registered is a load failure, never fatal
                self._fail(HOOK_GROUP, name, dist_name, exc)
                continue
            self.loaded.append(PluginInfo(group=HOOK_GROUP, name=name, distribution=dist_name, version=version,
                                          hooks=self.hooks_of(registered)))

    def _fail(self, group: str, name: str, distribution: str, exc: BaseException) -> None:
        error = f"{type(exc).__name__}: {exc}"
        log.warning("plugin %s (%s, group %s) failed to load and is skipped: %s", name, distribution, group, error)
        self.failures.append(PluginFailure(group=group, name=name, distribution=distribution, error=error))

    def _import(self, group: str, only: str | None, skip: set[str]) -> list[tuple[str, Any, tuple[str, str]]]:
        """The one loader: import ``group``'s enabled entry points through stevedore.

        Only ``only`` when given; never a name in ``skip`` or one tried before. Returns
        ``(name, loaded object, (distribution, version))``; an import failure is recorded in
        :attr:`failures` (and logged) instead.
        """
        eps = {
            ep.name: ep for ep in metadata.entry_points(group=group)
            if self._enabled(ep) and (only is None or ep.name == only) and ep.name not in skip
            and (group, ep.name) not in self._attempted
        }
        if not eps:
            return []
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
        return [(ext.name, ext.plugin, _dist(eps[ext.name]) if ext.name in eps else ("?", "?")) for ext in manager]

    # -- drivers --------------------------------------------------------------------------------

    def drivers(self, kind: str) -> dict[str, type[Any]]:
        """All loadable drivers of ``kind`` (``providers``, ``tools``, ...) by entry point name."""
        if kind not in self._all_loaded:
            self._load_drivers(kind, None)
            self._all_loaded.add(kind)
        return self._drivers.setdefault(kind, {})

    def _load_drivers(self, kind: str, only: str | None) -> None:
        """Import the entry points of ``kind`` (just ``only`` when given) not imported yet."""
        group = DRIVER_GROUPS[kind]
        found = self._drivers.setdefault(kind, {})
        for name, driver, (dist_name, version) in self._import(group, only, skip=set(found)):
            found[name] = driver
            self.loaded.append(PluginInfo(group=group, name=name, distribution=dist_name, version=version))

    def register_driver(self, kind: str, name: str, driver: type[Any]) -> None:
        """Add a driver without an entry point (custom builds, tests); it wins over one of the same name."""
        self._drivers.setdefault(kind, {})[name] = driver
        self.loaded.append(PluginInfo(group=DRIVER_GROUPS[kind], name=name, distribution="(registered)", version="-"))

    # A driver of a known kind subclasses that kind's contract ABC (what the entry point group
    # documents); the overloads give callers that class, so ``settings_type`` and the constructor
    # are checked. Nothing is verified at load time: a driver that ignores the contract fails
    # when it is built or called, as before.
    @overload
    def driver(self, kind: Literal["providers"], name: str) -> type[ProviderDriver]: ...
    @overload
    def driver(self, kind: Literal["vector_stores"], name: str) -> type[VectorStoreDriver]: ...
    @overload
    def driver(self, kind: Literal["search_engines"], name: str) -> type[SearchEngineDriver]: ...
    @overload
    def driver(self, kind: Literal["tools"], name: str) -> type[ToolDriver]: ...
    @overload
    def driver(self, kind: str, name: str) -> type[Any]: ...

    def driver(self, kind: str, name: str) -> type[Any]:
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
