"""Chorus tool driver ``units``: exact unit conversion for bots.

Registered as entry point ``units`` in group ``chorus.tools``. One ``[[skillsets.tools]]`` table
with ``driver = "units"`` gives the model one tool taking ``{"value", "from_unit", "to_unit"}``
that converts lengths, masses, temperatures, volumes, speeds and data sizes.
"""

__version__ = "0.1.0"

from chorus_tools_units.driver import UnitsSettings, UnitsTool
from chorus_tools_units.units import DIMENSIONS, Conversion, Unit, UnitTable

__all__ = ["DIMENSIONS", "Conversion", "Unit", "UnitTable", "UnitsSettings", "UnitsTool", "__version__"]
