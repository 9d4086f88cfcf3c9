"""The ``units`` tool driver: its strict settings and the tool the model calls."""

from __future__ import annotations

from typing import Annotated, Any

from msgspec import Meta

from chorus.egress import EgressPolicy
from chorus.tools import ToolContext, ToolDriver, ToolError, ToolSettings, ToolSpec
from chorus_tools_units.units import DIMENSIONS, Customary, DataPrefixes, Dimension, UnitTable

_ARGUMENTS = ("value", "from_unit", "to_unit")
_EXAMPLES: dict[Dimension, str] = {
    "length": "km, mi, ft",
    "mass": "kg, lb, oz",
    "temperature": "°C, °F, K",
    "volume": "L, US gal, cup",
    "speed": "km/h, mph, kn",
    "data": "MB, GiB, Mbit",
}


class UnitsSettings(ToolSettings, kw_only=True):
    """``driver = "units"`` keys (unknown keys and wrong types are configuration errors)."""

    #: Significant digits of results (15 at most: every result is exact as a JSON number).
    precision: Annotated[int, Meta(ge=1, le=15)] = 12
    #: The dimensions this tool converts; units of the others are refused with a clear error.
    dimensions: tuple[Dimension, ...] = DIMENSIONS
    #: What bare gallon, quart, pint, cup, fl oz and ton mean.
    customary: Customary = "us"
    #: Whether kB, MB, GB, ... are powers of 1000 ("si") or of 1024 ("binary").
    data_prefixes: DataPrefixes = "si"

    def __post_init__(self) -> None:
        if not self.dimensions:
            raise ValueError(f"dimensions must name at least one of {', '.join(DIMENSIONS)}")
        if len(set(self.dimensions)) != len(self.dimensions):
            raise ValueError("dimensions lists a dimension twice")


class UnitsTool(ToolDriver):
    """Convert a value between units of length, mass, temperature, volume, speed and data size."""

    settings_type = UnitsSettings
    settings: UnitsSettings

    def __init__(self, settings: ToolSettings, egress: EgressPolicy) -> None:
        super().__init__(settings, egress)
        s = self.settings
        # Built once per configured tool; read-only afterwards, so concurrent calls can share it.
        self.table = UnitTable(s.dimensions, customary=s.customary, data_prefixes=s.data_prefixes)

    def tools(self) -> list[ToolSpec]:
        s = self.settings
        examples = "; ".join(_EXAMPLES[d] for d in s.dimensions)
        return [
            ToolSpec(
                name=s.name,
                description=s.description or self._description(),
                parameters={
                    "type": "object",
                    "properties": {
                        "value": {"type": "number", "description": "The quantity to convert, e.g. 3.5"},
                        "from_unit": {"type": "string", "description": f"Unit of value, a symbol or name: {examples}"},
                        "to_unit": {"type": "string", "description": "Unit to convert to, of the same dimension"},
                    },
                    "required": list(_ARGUMENTS),
                    "additionalProperties": False,
                },
            )
        ]

    async def call(self, name: str, arguments: dict[str, Any], ctx: ToolContext) -> Any:
        """Return ``{"value", "unit", "exact", "text"}``; raise :class:`ToolError` for what the model must fix."""
        missing = [key for key in _ARGUMENTS if arguments.get(key) is None]
        if missing:
            raise ToolError(f"missing argument(s): {', '.join(missing)}")
        conversion = self.table.convert(
            arguments["value"], arguments["from_unit"], arguments["to_unit"], precision=self.settings.precision
        )
        return conversion.result()

    def _description(self) -> str:
        s = self.settings
        parts = [f"Convert a value between units of {', '.join(s.dimensions)}, with exact factors."]
        if "temperature" in s.dimensions:
            parts.append("Temperatures are absolute readings, not differences.")
        if "volume" in s.dimensions or "mass" in s.dimensions:
            system = "US customary" if s.customary == "us" else "British imperial"
            parts.append(f"Bare gallon, quart, pint, cup, fl oz and ton are {system} (prefix US or imp to choose).")
        if "data" in s.dimensions:
            base = "1000" if s.data_prefixes == "si" else "1024"
            parts.append(f"kB, MB, GB, TB are powers of {base}; KiB, MiB, GiB, TiB of 1024; Mbit, Gbit are bits.")
        return " ".join(parts)
