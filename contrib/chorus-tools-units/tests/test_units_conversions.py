"""The conversion arithmetic, unit spellings and the errors the model reads, without a gateway."""

from __future__ import annotations

import time
from decimal import Decimal
from fractions import Fraction
from itertools import product
from typing import Any

import pytest

pytest.importorskip("chorus_tools_units", reason="chorus-tools-units is not installed")

from chorus_tools_units import DIMENSIONS, UnitsSettings, UnitsTool, UnitTable
from chorus_tools_units.units import format_decimal, parse_value

from chorus.config import convert
from chorus.egress import EgressPolicy
from chorus.tools import ToolContext, ToolError

TABLE = UnitTable()


@pytest.mark.parametrize(
    ("value", "source", "target", "expected"),
    [
        (1, "mi", "km", "1.609344"),
        (1, "in", "mm", "25.4"),
        (1, "nmi", "m", "1852"),
        (3, "ft", "yd", "1"),
        (1, "lb", "kg", "0.45359237"),
        (16, "oz", "lb", "1"),
        (1, "st", "kg", "6.35029318"),
        (1, "ton", "kg", "907.18474"),  # US customary by default: the short ton
        (1, "long tn", "lb", "2240"),
        (100, "°C", "°F", "212"),
        (-40, "°C", "°F", "-40"),
        (0, "K", "°C", "-273.15"),
        (98.6, "°F", "°C", "37"),
        (491.67, "°R", "°C", "0"),
        (1, "gal", "L", "3.785411784"),
        (1, "imp gal", "L", "4.54609"),
        (1, "US gal", "in³", "231"),
        (2, "imp pt", "mL", "1136.5225"),
        (1, "US cup", "US fl oz", "8"),
        (1, "imp pt", "imp fl oz", "20"),
        (1, "m³", "L", "1000"),
        (60, "mph", "km/h", "96.56064"),
        (1, "kn", "km/h", "1.852"),
        (36, "km/h", "m/s", "10"),
        (1, "GB", "MB", "1000"),
        (1, "GiB", "MiB", "1024"),
        (100, "Mbit", "MB", "12.5"),
        (1, "B", "bit", "8"),
        (1, "KiB", "B", "1024"),
        ("3/4", "in", "mm", "19.05"),
        ("2.5e3", "g", "kg", "2.5"),
        (0.1, "m", "cm", "10"),  # floats are read as the decimal they print as, not 0.1000000000000000055...
    ],
)
def test_exact_conversions(value: Any, source: str, target: str, expected: str) -> None:
    conversion = TABLE.convert(value, source, target)
    assert conversion.exact_value == Fraction(expected)
    assert conversion.exact
    result = conversion.result()
    assert result["value"] == float(expected)
    assert result["unit"] == TABLE.lookup(target).symbol
    assert result["exact"] is True


def test_result_shape_and_text() -> None:
    assert TABLE.convert(1, "miles", "kilometres").result() == {
        "value": 1.609344, "unit": "km", "exact": True, "text": "1 mi = 1.609344 km",
    }
    assert TABLE.convert(1, "ft", "yd", precision=3).result() == {
        "value": 0.333, "unit": "yd", "exact": False, "text": "1 ft ≈ 0.333 yd",
    }


def test_rounding_is_to_significant_digits_half_away_from_zero() -> None:
    assert TABLE.convert(125, "mm", "m", precision=2).result()["value"] == 0.13
    assert TABLE.convert(-125, "mm", "m", precision=2).result()["value"] == -0.13
    assert TABLE.convert(1, "nm", "mi", precision=4).result()["text"] == "1 nm ≈ 6.214e-13 mi"
    big = TABLE.convert(1, "EB", "bit").result()
    assert big["text"] == "1 EB = 8000000000000000000 bit" and big["exact"]


def test_every_conversion_round_trips_exactly() -> None:
    x = Fraction(12345, 7)
    for dimension in DIMENSIONS:
        units = [u for u in TABLE.units if u.dimension == dimension]
        for a, b in product(units, repeat=2):
            assert a.from_base(b.to_base(b.from_base(a.to_base(x)))) == x, (a.symbol, b.symbol)


@pytest.mark.parametrize(
    ("spelling", "symbol"),
    [
        ("miles per hour", "mph"),
        ("Kilometres-per-hour", "km/h"),
        ("km/hr", "km/h"),
        ("°F", "°F"),
        ("F", "°F"),
        ("degrees Fahrenheit", "°F"),
        ("deg C", "°C"),
        ("degC", "°C"),
        ("celsius", "°C"),
        ("kelvins", "K"),
        ("µm", "µm"),
        ("μm", "µm"),  # Greek mu
        ("um", "µm"),
        ("microns", "µm"),
        ("feet", "ft"),
        ("inches", "in"),
        ("LBS", "lb"),
        ("metric tons", "t"),
        ("m3", "m³"),
        ("cubic feet", "ft³"),
        ("fl. oz.", "US fl oz"),
        ("US gallons", "US gal"),
        ("UK pints", "imp pt"),
        ("MB", "MB"),
        ("Mb", "Mbit"),
        ("B", "B"),
        ("b", "bit"),
        ("megabits", "Mbit"),
        ("KB", "kB"),
        ("kb", "kbit"),
        ("gibibytes", "GiB"),
        ("NM", "nmi"),
        ("nm", "nm"),
        ("  knots ", "kn"),
    ],
)
def test_spellings(spelling: str, symbol: str) -> None:
    assert TABLE.lookup(spelling).symbol == symbol


def test_customary_and_data_prefix_settings() -> None:
    imperial = UnitTable(customary="imperial")
    assert imperial.lookup("gallon").symbol == "imp gal"
    assert imperial.lookup("ton").symbol == "long tn"
    assert imperial.lookup("US gallon").symbol == "US gal"  # the explicit names always work
    binary = UnitTable(data_prefixes="binary")
    assert binary.convert(1, "GB", "B").exact_value == 1024**3
    assert binary.convert(1, "Gbit", "bit").exact_value == 1000**3  # bit rates stay decimal
    assert binary.convert(1, "GB", "GiB").exact_value == 1


@pytest.mark.parametrize(
    ("value", "source", "target", "message"),
    [
        (1, "furlong", "m", r"^unknown unit 'furlong'\. Known units: length: m, km, .*; data: B, bit, "),
        (1, "metr", "m", r"^unknown unit 'metr'; did you mean m\?$"),
        (1, "ms", "m", r"^unknown unit 'ms'"),  # not two metres
        (1, "kg", "mL", r"^cannot convert kg \(mass\) to mL \(volume\)$"),
        (1, "oz", "US fl oz", r"^cannot convert oz \(mass\) to US fl oz \(volume\)$"),
        (1, "mb", "kB", r"^ambiguous unit 'mb': MB \(megabyte\) or Mbit \(megabit\)\?$"),
        (1, "kib", "kB", r"^ambiguous unit 'kib': KiB \(kibibyte\) or Kibit \(kibibit\)\?$"),
        (-500, "°C", "K", r"^-500 °C is below absolute zero$"),
        (-1, "K", "°C", r"^-1 K is below absolute zero$"),
        (True, "m", "km", r"^value must be a number"),
        ("abc", "m", "km", r"^value must be a number, e\.g\. 3\.5 \(got 'abc'\)$"),
        (float("nan"), "m", "km", r"^value must be a finite number$"),
        (float("inf"), "m", "km", r"^value must be a finite number$"),
        ("Infinity", "m", "km", r"^value must be a finite number$"),
        ("1e999999999", "m", "km", r"^value is out of range"),  # never expanded into a huge integer
        (10**200, "m", "km", r"^value is out of range"),
        ("1" * 101, "m", "km", r"^value is longer than 100 characters$"),
        ("1/0", "m", "km", r"^value divides by zero$"),
        ([1], "m", "km", r"^value must be a number"),
        (1, "", "km", r"^from_unit must be a unit symbol or name, e\.g\. m, km, cm$"),
        (1, "m", 5, r"^to_unit must be a unit symbol or name"),
        (1, "m" * 41, "km", r"^from_unit is longer than 40 characters$"),
    ],
)
def test_errors_the_model_can_read(value: Any, source: Any, target: Any, message: str) -> None:
    with pytest.raises(ToolError, match=message):
        TABLE.convert(value, source, target)


def test_disabled_dimensions_are_refused_by_name() -> None:
    table = UnitTable(["length", "mass"])
    with pytest.raises(ToolError, match=r"^mph is a speed unit; this tool converts length, mass$"):
        table.convert(1, "mph", "km/h")
    with pytest.raises(ToolError, match=r"^unknown unit 'furlong'\. Known units: length: .*; mass: [^;]*$"):
        table.lookup("furlong")


def test_parse_value_keeps_the_written_form() -> None:
    assert parse_value(" 3/4 ") == (Fraction(3, 4), "3/4")
    assert parse_value(1e-7) == (Fraction(1, 10**7), "0.0000001")
    assert parse_value("1_000") == (Fraction(1000), "1000")
    assert format_decimal(Decimal("1.50E+3")) == "1500"
    assert format_decimal(Decimal("-0")) == "0"
    assert format_decimal(Decimal("1E+21")) == "1e+21"


# -- the driver, called as Chorus calls it ---------------------------------------------------------


def make_tool(**keys: Any) -> UnitsTool:
    settings = convert({"name": "convert_units", "driver": "units", **keys}, UnitsSettings, "test")
    return UnitsTool(settings, EgressPolicy())


async def call(tool: UnitsTool, arguments: dict[str, Any]) -> Any:
    async with EgressPolicy().client() as http:
        ctx = ToolContext(workspace="acme", bot="chef", request_id="req_1", deadline=time.monotonic() + 5, http=http)
        return await tool.call("convert_units", arguments, ctx)


def test_tool_spec() -> None:
    (spec,) = make_tool().tools()
    assert spec.name == "convert_units"
    assert spec.description.startswith(
        "Convert a value between units of length, mass, temperature, volume, speed, data, with exact factors."
    )
    assert "US customary" in spec.description and "powers of 1000" in spec.description
    assert spec.parameters["required"] == ["value", "from_unit", "to_unit"]
    assert spec.parameters["properties"]["value"]["type"] == "number"
    assert spec.definition()["function"]["name"] == "convert_units"


def test_tool_spec_follows_settings() -> None:
    (spec,) = make_tool(dimensions=["data"], data_prefixes="binary").tools()
    assert spec.description.startswith("Convert a value between units of data,")
    assert "powers of 1024" in spec.description and "Temperatures" not in spec.description
    assert spec.parameters["properties"]["from_unit"]["description"].endswith("MB, GiB, Mbit")
    (custom,) = make_tool(description="Kitchen conversions").tools()
    assert custom.description == "Kitchen conversions"


async def test_call() -> None:
    tool = make_tool(precision=4, customary="imperial")
    assert await call(tool, {"value": 1, "from_unit": "pint", "to_unit": "mL"}) == {
        "value": 568.3, "unit": "mL", "exact": False, "text": "1 imp pt ≈ 568.3 mL",
    }
    assert (await call(tool, {"value": "3/4", "from_unit": "cup", "to_unit": "imp fl oz"}))["value"] == 7.5


async def test_call_with_missing_arguments() -> None:
    with pytest.raises(ToolError, match=r"^missing argument\(s\): from_unit, to_unit$"):
        await call(make_tool(), {"value": 1})
