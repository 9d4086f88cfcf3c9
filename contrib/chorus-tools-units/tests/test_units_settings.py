"""``UnitsSettings`` is strict: Chorus refuses a misspelt or mistyped key at startup, naming it."""

from __future__ import annotations

from typing import Any

import pytest

pytest.importorskip("chorus_tools_units", reason="chorus-tools-units is not installed")

from chorus_tools_units import DIMENSIONS, UnitsSettings

from chorus.config import convert
from chorus.errors import ConfigError

WHERE = "skillsets[0].tools[0]"


def settings(**keys: Any) -> UnitsSettings:
    result: UnitsSettings = convert({"name": "convert_units", "driver": "units", **keys}, UnitsSettings, WHERE)
    return result


def test_defaults() -> None:
    s = settings()
    assert (s.name, s.driver, s.description) == ("convert_units", "units", "")
    assert (s.precision, s.dimensions, s.customary, s.data_prefixes) == (12, DIMENSIONS, "us", "si")


def test_every_key() -> None:
    s = settings(
        description="Kitchen conversions", precision=6, dimensions=["volume", "mass", "temperature"],
        customary="imperial", data_prefixes="binary",
    )
    assert s.dimensions == ("volume", "mass", "temperature")
    assert (s.precision, s.customary, s.data_prefixes) == (6, "imperial", "binary")


@pytest.mark.parametrize(
    ("keys", "message"),
    [
        ({"precison": 6}, "Object contains unknown field `precison`"),
        ({"precision": 0}, "Expected `int` >= 1 - at `precision`"),
        ({"precision": 16}, "Expected `int` <= 15 - at `precision`"),
        ({"precision": "6"}, "Expected `int`, got `str` - at `precision`"),
        ({"precision": 6.5}, "Expected `int`, got `float` - at `precision`"),
        ({"dimensions": "length"}, "Expected `array`, got `str` - at `dimensions`"),
        ({"dimensions": ["length", "time"]}, "Invalid enum value 'time' - at `dimensions[1]`"),
        ({"dimensions": []}, "dimensions must name at least one of length, mass, temperature, volume, speed, data"),
        ({"dimensions": ["mass", "mass"]}, "dimensions lists a dimension twice"),
        ({"customary": "uk"}, "Invalid enum value 'uk' - at `customary`"),
        ({"data_prefixes": "jedec"}, "Invalid enum value 'jedec' - at `data_prefixes`"),
    ],
)
def test_bad_keys_are_configuration_errors(keys: dict[str, Any], message: str) -> None:
    with pytest.raises(ConfigError) as caught:
        settings(**keys)
    assert str(caught.value) == f"{WHERE}: {message}"


def test_name_and_driver_are_required() -> None:
    with pytest.raises(ConfigError, match=r"Object missing required field `name`"):
        convert({"driver": "units"}, UnitsSettings, WHERE)
