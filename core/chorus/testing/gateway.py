"""Chorus as it runs in production, assembled for tests: the app, its plugins, drivers and skillsets.

Everything here loads plugins the way ``chorus serve`` does (entry points, filtered by
``CHORUS_PLUGINS`` / ``CHORUS_DISABLE_PLUGINS`` from ``env``, default :data:`os.environ`; pass
``env={}`` to ignore the caller's), and can add objects that have no entry point:

* ``*plugins``: hook plugin objects (modules or instances with ``@chorus.hookimpl`` methods);
* ``tools={"name": DriverClass}``: tool drivers, as if registered under that ``driver`` name;
* ``drivers={"vector_stores": {"name": DriverClass}}``: drivers of any kind (``providers``,
  ``vector_stores``, ``search_engines``, ``tools``).

A registered driver wins over an installed one of the same name.

* :func:`make_app` builds the ASGI app for a :class:`chorus.config.Config`;
* :func:`serve` wraps it in a :class:`~chorus.testing.server.LiveServer` (not started: use
  ``with serve(config) as server:``);
* :func:`serve_with_plugins` does both from :func:`chorus.testing.config.make_config`'s test
  configuration plus your TOML;
* :func:`load_driver` resolves a driver class by its entry point name (has ``units`` been
  registered as a ``chorus.tools`` entry point?);
* :func:`build_skillsets` builds ``[[skillsets]]`` tables into skillsets exactly as the app
  does: start them, call their tools, close them::

    (skillset,) = build_skillsets([SkillsetConfig(id="kitchen", workspace="acme", tools=[...])], env={})
    await skillset.start()
    try:
        driver = skillset.owner("convert_units")     # the driver offering that tool
        ctx = ToolContext(workspace="acme", bot="chef", request_id="r1",
                          deadline=time.monotonic() + 5, http=skillset.http)
        await driver.call("convert_units", {...}, ctx)
    finally:
        await skillset.aclose()

This is the one module of :mod:`chorus.testing` that reaches into Chorus internals (the app
factory, the plugin manager, the skillset builder); tests use it instead of importing those.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import TYPE_CHECKING, Any

# The internals a test needs to assemble Chorus; keep every such import here.
from chorus.plugins.manager import PluginManager
from chorus.runtime.skillsets import Skillset
from chorus.runtime.skillsets import build_skillsets as _build_skillsets
from chorus.server.app import create_app
from chorus.testing.config import make_config
from chorus.testing.server import LiveServer

if TYPE_CHECKING:
    from litestar import Litestar

    from chorus.config import Config, SkillsetConfig

__all__ = ["Skillset", "build_skillsets", "load_driver", "make_app", "serve", "serve_with_plugins"]

Drivers = Mapping[str, Mapping[str, type]]


def _manager(plugins: Sequence[object] = (), tools: Mapping[str, type] | None = None,
             drivers: Drivers | None = None, env: Mapping[str, str] | None = None) -> PluginManager:
    pm = PluginManager(env=env)
    for i, plugin in enumerate(plugins):
        pm.register(plugin, name=f"test-plugin-{i}")
    for kind, named in (drivers or {}).items():
        for name, driver in named.items():
            pm.register_driver(kind, name, driver)
    for name, driver in (tools or {}).items():
        pm.register_driver("tools", name, driver)
    return pm


def make_app(config: Config, *plugins: object, tools: Mapping[str, type] | None = None,
             drivers: Drivers | None = None, env: Mapping[str, str] | None = None) -> Litestar:
    """The Chorus ASGI app for ``config``, as ``chorus serve`` builds it, plus ``plugins`` and drivers.

    Providers, skillsets and stores start with the app's lifespan: serve it with
    :class:`~chorus.testing.server.LiveServer` (or any ASGI test client that runs the lifespan).
    """
    return create_app(config, pm=_manager(plugins, tools, drivers, env))


def serve(config: Config, *plugins: object, tools: Mapping[str, type] | None = None,
          drivers: Drivers | None = None, env: Mapping[str, str] | None = None) -> LiveServer:
    """A :class:`~chorus.testing.server.LiveServer` of :func:`make_app` (not started yet)."""
    return LiveServer(make_app(config, *plugins, tools=tools, drivers=drivers, env=env))


def serve_with_plugins(
    upstream_url: str, *plugins: object, extra: str = "", server_extra: str = "",
    tools: Mapping[str, type] | None = None, drivers: Drivers | None = None, data_dir: str | None = None,
    env: Mapping[str, str] | None = None,
) -> LiveServer:
    """A live Chorus (not started yet) on the test configuration with its providers on ``upstream_url``.

    ``extra``, ``server_extra`` and ``data_dir`` are :func:`chorus.testing.config.make_config`'s
    (a fresh temporary data directory unless given). Without ``tools=``, a ``driver = "..."`` in
    ``extra`` is found through its entry point, as in production.
    """
    config = make_config(upstream_url, extra, server_extra, data_dir)
    return serve(config, *plugins, tools=tools, drivers=drivers, env=env)


def load_driver(kind: str, name: str, *, env: Mapping[str, str] | None = None) -> type[Any]:
    """The driver class registered as entry point ``name`` of ``kind`` (``"tools"``, ``"providers"``,
    ``"vector_stores"``, ``"search_engines"``), as Chorus loads it.

    Raises :class:`chorus.errors.PluginError` when none is installed (or it is disabled in ``env``)
    or it fails to import, with the message Chorus would give.
    """
    return _manager(env=env).driver(kind, name)


def build_skillsets(configs: Sequence[SkillsetConfig], *, tools: Mapping[str, type] | None = None,
                    env: Mapping[str, str] | None = None) -> list[Skillset]:
    """Build skillsets from ``[[skillsets]]`` tables as the app does (drivers found by entry point
    unless given in ``tools``), not started.

    Bad tables raise :class:`chorus.errors.ConfigError` naming ``skillsets[i].tools[j]``. Each
    skillset has ``start()``, ``aclose()``, ``specs()`` (the tools offered), ``owner(name)`` (the
    driver offering a tool) and ``http`` (its egress-guarded client, for a ``ToolContext``).
    """
    return _build_skillsets(list(configs), _manager(tools=tools, env=env))
