"""The pluggy markers for the ``chorus`` project.

Plugin authors import ``hookimpl`` from :mod:`chorus`; nothing outside :mod:`chorus.plugins`
imports pluggy directly.
"""

import pluggy

PROJECT = "chorus"

hookspec = pluggy.HookspecMarker(PROJECT)
hookimpl = pluggy.HookimplMarker(PROJECT)
