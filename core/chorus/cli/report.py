"""How the command line reports a failure: one line on standard error, ``chorus: error: <message>``.

The same form argparse uses for a bad command line, so every failure of the ``chorus`` command
reads alike and is easy to grep for.
"""

from __future__ import annotations

import sys

PREFIX = "chorus: error: "


def error(message: str) -> None:
    """Print ``chorus: error: <message>`` on standard error."""
    print(PREFIX + message, file=sys.stderr)


class UsageError(Exception):
    """A command line that names something that does not exist (reported like argparse's errors, exit 2)."""
