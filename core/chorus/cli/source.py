"""Where the command line's configuration comes from: ``--config``, ``$CHORUS_CONFIG`` or the default."""

from __future__ import annotations

import os

from chorus.contract.config import Config, load_config

CONFIG_ENV = "CHORUS_CONFIG"


def uses_embedded_default(path: str | None) -> bool:
    """Whether :func:`load` of ``path`` gives the embedded default (no ``--config``, no ``$CHORUS_CONFIG``)."""
    return not (path or os.environ.get(CONFIG_ENV))


def load(path: str | None) -> tuple[Config, str | None]:
    """The configuration at ``path`` (else ``$CHORUS_CONFIG``, else the embedded default).

    Returns the configuration and, when the embedded default just created the default workspace,
    its new key (shown once by ``chorus serve``); otherwise ``None``.
    """
    path = path or os.environ.get(CONFIG_ENV)
    if path:
        return load_config(path), None
    from chorus.runtime.defaults import default_config

    return default_config()
