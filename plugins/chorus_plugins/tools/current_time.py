"""Built-in tool ``current_time``: the current date and time, in a time zone.

Arguments ``{"timezone": "Europe/Paris"}`` (optional; defaults to the ``timezone`` setting, UTC
unless configured). Time zones are IANA names read with :mod:`zoneinfo`, from the system's time
zone database or the ``tzdata`` package; UTC works without either. The result is ``{"iso",
"date", "time", "weekday", "timezone", "utc_offset", "unix"}``.
"""

from __future__ import annotations

import datetime as dt
from typing import Any
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError, available_timezones

from chorus.tools import ToolContext, ToolDriver, ToolError, ToolSettings, ToolSpec

_UTC_NAMES = frozenset({"utc", "etc/utc", "z", "zulu", "gmt", "etc/gmt", "universal"})
_MAX_NAME = 64
_WEEKDAYS = ("Monday", "Tuesday", "Wednesday", "Thursday", "Friday", "Saturday", "Sunday")


class CurrentTimeSettings(ToolSettings):
    """``driver = "current_time"`` keys: ``timezone`` is the default zone (an IANA name)."""

    timezone: str = "UTC"

    def __post_init__(self) -> None:
        try:
            zone(self.timezone)
        except ToolError as exc:
            raise ValueError(f"timezone: {exc}") from None


class CurrentTimeTool(ToolDriver):
    """Tell the model what time it is."""

    settings_type = CurrentTimeSettings
    settings: CurrentTimeSettings

    def tools(self) -> list[ToolSpec]:
        s = self.settings
        return [
            ToolSpec(
                name=s.name,
                description=s.description or "Get the current date, time and weekday in a time zone.",
                parameters={
                    "type": "object",
                    "properties": {
                        "timezone": {
                            "type": "string",
                            "description": f"IANA time zone such as Europe/Paris (default {s.timezone})",
                        }
                    },
                },
            )
        ]

    async def call(self, name: str, arguments: dict[str, Any], ctx: ToolContext) -> Any:
        """Return the current time in ``arguments["timezone"]`` (or the default zone)."""
        requested = arguments.get("timezone") if isinstance(arguments, dict) else None
        if requested is not None and not isinstance(requested, str):
            raise ToolError("timezone must be a string such as Europe/Paris")
        tz_name = (requested or "").strip() or self.settings.timezone
        return describe(dt.datetime.now(zone(tz_name)), tz_name)


def zone(name: str) -> dt.tzinfo:
    """The time zone called ``name``; :class:`ToolError` saying why when there is none."""
    if name.strip().lower() in _UTC_NAMES:
        return dt.UTC
    if not name or len(name) > _MAX_NAME:
        raise ToolError(f"unknown time zone {name[:_MAX_NAME]!r} (use an IANA name such as Europe/Paris)")
    try:
        return ZoneInfo(name)
    except (ZoneInfoNotFoundError, ValueError, OSError):
        if not available_timezones():
            raise ToolError("no time zone database is installed on this server (only UTC works)") from None
        raise ToolError(f"unknown time zone {name!r} (use an IANA name such as Europe/Paris)") from None


def describe(now: dt.datetime, name: str) -> dict[str, Any]:
    """The fields of the tool's result for the aware datetime ``now``."""
    offset = now.strftime("%z")
    return {
        "iso": now.isoformat(timespec="seconds"),
        "date": now.date().isoformat(),
        "time": now.strftime("%H:%M:%S"),
        "weekday": _WEEKDAYS[now.weekday()],
        "timezone": "UTC" if now.tzinfo is dt.UTC else name,
        "utc_offset": f"{offset[:3]}:{offset[3:]}" if offset else "+00:00",
        "unix": int(now.timestamp()),
    }
