"""The unit table and the exact conversion arithmetic (pure: no I/O, no state shared between calls).

Every unit is an exact :class:`~fractions.Fraction` of its dimension's base unit (metre, kilogram,
kelvin, litre, metre per second, byte), plus an offset for the temperature scales. Values are
converted with fractions end to end and rounded once, at the end, to significant digits. Every
failure the model can fix (an unknown, ambiguous or disabled unit, incompatible dimensions, a value
that is not a number or is below absolute zero) is a :class:`~chorus.tools.ToolError` saying so.
"""

from __future__ import annotations

import difflib
import math
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from decimal import ROUND_HALF_UP, Decimal, InvalidOperation, localcontext
from fractions import Fraction
from typing import Any, Literal

from chorus.tools import ToolError

Dimension = Literal["length", "mass", "temperature", "volume", "speed", "data"]
Customary = Literal["us", "imperial"]
DataPrefixes = Literal["si", "binary"]

#: Every dimension, in the order they are described to the model.
DIMENSIONS: tuple[Dimension, ...] = ("length", "mass", "temperature", "volume", "speed", "data")
#: Values must be 0 or have a magnitude between 1e-100 and 1e100 (keeps exact arithmetic cheap).
MAX_EXPONENT = 100
#: The longest value string and unit string accepted.
MAX_VALUE_CHARS = 100
MAX_UNIT_CHARS = 40

_INCH = Fraction("0.0254")
_FOOT = Fraction("0.3048")
_MILE = Fraction("1609.344")
_POUND = Fraction("0.45359237")
_US_GALLON = 231 * _INCH**3 * 1000  # litres: 3.785411784
_IMPERIAL_GALLON = Fraction("4.54609")
_SI_PREFIXES = (("k", "kilo"), ("M", "mega"), ("G", "giga"), ("T", "tera"), ("P", "peta"), ("E", "exa"))
_IEC_PREFIXES = (("Ki", "kibi"), ("Mi", "mebi"), ("Gi", "gibi"), ("Ti", "tebi"), ("Pi", "pebi"), ("Ei", "exbi"))
_DEGREE_WORDS = frozenset({"deg", "degree", "degrees"})
_IRREGULAR = {"feet": "foot"}


@dataclass(frozen=True, slots=True)
class Unit:
    """One unit: ``base = (value + offset) * factor`` in its dimension's base unit."""

    symbol: str
    name: str
    dimension: Dimension
    factor: Fraction
    offset: Fraction = Fraction(0)

    def to_base(self, value: Fraction) -> Fraction:
        return (value + self.offset) * self.factor

    def from_base(self, value: Fraction) -> Fraction:
        return value / self.factor - self.offset


@dataclass(frozen=True, slots=True)
class Conversion:
    """The outcome of one conversion: the exact result and its rounded form."""

    shown_input: str
    source: Unit
    target: Unit
    exact_value: Fraction
    rounded: Decimal

    @property
    def exact(self) -> bool:
        """Whether :attr:`rounded` is the exact result (no digits were lost)."""
        return Fraction(self.rounded) == self.exact_value

    def result(self) -> dict[str, Any]:
        """The tool result the model reads."""
        relation = "=" if self.exact else "≈"
        text = f"{self.shown_input} {self.source.symbol} {relation} {format_decimal(self.rounded)} {self.target.symbol}"
        return {"value": float(self.rounded), "unit": self.target.symbol, "exact": self.exact, "text": text}


class UnitTable:
    """The units one tool instance knows, resolved from what a model writes (``"miles per hour"``).

    ``customary`` decides what the bare names that differ between US customary and British
    imperial measure mean (``gallon``, ``quart``, ``pint``, ``cup``, ``fl oz``, ``ton``);
    ``data_prefixes`` whether ``kB``/``MB``/``GB``/... are powers of 1000 (``"si"``) or 1024
    (``"binary"``). ``KiB``/``MiB``/... are always 1024-based and bit multiples always 1000-based.
    """

    def __init__(
        self,
        dimensions: Sequence[Dimension] = DIMENSIONS,
        *,
        customary: Customary = "us",
        data_prefixes: DataPrefixes = "si",
    ) -> None:
        self.dimensions = tuple(dimensions)
        self.units: list[Unit] = []
        self._exact: dict[str, Unit] = {}
        self._loose: dict[str, list[Unit]] = {}
        for unit, spellings in _definitions(customary, data_prefixes):
            self.units.append(unit)
            for spelling in spellings:
                key = _light(spelling)
                if self._exact.setdefault(key, unit) is not unit:
                    raise RuntimeError(f"unit spelling {spelling!r} is defined twice")
                found = self._loose.setdefault(_loose(spelling), [])
                if unit not in found:
                    found.append(unit)

    def lookup(self, text: object, role: str = "unit") -> Unit:
        """The unit ``text`` names: an exact, case-sensitive spelling first (``MB`` vs ``Mb``), then any case."""
        if not isinstance(text, str) or not text.strip():
            raise ToolError(f"{role} must be a unit symbol or name, e.g. {self._examples()}")
        if len(text) > MAX_UNIT_CHARS:
            raise ToolError(f"{role} is longer than {MAX_UNIT_CHARS} characters")
        unit = self._exact.get(_light(text))
        if unit is None:
            candidates = next((self._loose[k] for k in _variants(_loose(text)) if k in self._loose), [])
            if not candidates:
                raise ToolError(self._unknown(text.strip()))
            enabled = [u for u in candidates if u.dimension in self.dimensions]
            if len(enabled) > 1:
                options = " or ".join(f"{u.symbol} ({u.name})" for u in enabled)
                raise ToolError(f"ambiguous unit {text.strip()!r}: {options}?")
            unit = (enabled or candidates)[0]
        if unit.dimension not in self.dimensions:
            converts = ", ".join(self.dimensions)
            raise ToolError(f"{unit.symbol} is a {unit.dimension} unit; this tool converts {converts}")
        return unit

    def convert(self, value: object, from_unit: object, to_unit: object, *, precision: int = 12) -> Conversion:
        """Convert ``value`` from ``from_unit`` to ``to_unit``, rounded to ``precision`` significant digits."""
        number, shown = parse_value(value)
        source = self.lookup(from_unit, "from_unit")
        target = self.lookup(to_unit, "to_unit")
        if source.dimension != target.dimension:
            raise ToolError(
                f"cannot convert {source.symbol} ({source.dimension}) to {target.symbol} ({target.dimension})"
            )
        base = source.to_base(number)
        if source.dimension == "temperature" and base < 0:
            raise ToolError(f"{shown} {source.symbol} is below absolute zero")
        exact_value = target.from_base(base)
        return Conversion(shown, source, target, exact_value, round_significant(exact_value, precision))

    def symbols(self, dimension: Dimension) -> list[str]:
        """The canonical symbols of ``dimension``, in table order."""
        return [u.symbol for u in self.units if u.dimension == dimension]

    def _unknown(self, text: str) -> str:
        spellings = {k: us for k, us in self._loose.items() if all(u.dimension in self.dimensions for u in us)}
        close = difflib.get_close_matches(_loose(text), list(spellings), n=3, cutoff=0.75)
        suggestions = list(dict.fromkeys(u.symbol for k in close for u in spellings[k]))
        if suggestions:
            return f"unknown unit {text!r}; did you mean {', '.join(suggestions)}?"
        known = "; ".join(f"{d}: {', '.join(self.symbols(d))}" for d in self.dimensions)
        return f"unknown unit {text!r}. Known units: {known}"

    def _examples(self) -> str:
        return ", ".join(self.symbols(self.dimensions[0])[:3])


def parse_value(value: object) -> tuple[Fraction, str]:
    """``value`` (a JSON number, or a string such as ``"1.5"``, ``"2e3"`` or ``"3/4"``) as an exact fraction.

    Also returns the value as it is shown in the result text.
    """
    if isinstance(value, bool) or not isinstance(value, (int, float, str)):
        raise ToolError("value must be a number, e.g. 3.5")
    if isinstance(value, str):
        text = value.strip()
        if len(text) > MAX_VALUE_CHARS:
            raise ToolError(f"value is longer than {MAX_VALUE_CHARS} characters")
        numerator, slash, denominator = text.partition("/")
        top = _decimal(numerator)
        if not slash:
            return Fraction(top), format_decimal(top)
        bottom = _decimal(denominator)
        if bottom == 0:
            raise ToolError("value divides by zero")
        return Fraction(top) / Fraction(bottom), f"{format_decimal(top)}/{format_decimal(bottom)}"
    if isinstance(value, float) and not math.isfinite(value):
        raise ToolError("value must be a finite number")
    number = _decimal(value)
    return Fraction(number), format_decimal(number)


def round_significant(value: Fraction, digits: int) -> Decimal:
    """``value`` rounded (half away from zero) to ``digits`` significant digits."""
    with localcontext() as ctx:
        ctx.prec = digits
        ctx.rounding = ROUND_HALF_UP
        return Decimal(value.numerator) / Decimal(value.denominator)


def format_decimal(value: Decimal) -> str:
    """Plain notation without trailing zeros (``1609.344``), scientific for very large or small values."""
    if value == 0:
        return "0"
    with localcontext() as ctx:
        ctx.prec = 2 * MAX_VALUE_CHARS
        value = value.normalize()
    if -7 <= value.adjusted() < 21:
        return format(value, "f")
    return format(value, "e")


def _decimal(value: float | str) -> Decimal:
    try:
        number = Decimal(repr(value) if isinstance(value, float) else value)
    except (InvalidOperation, ValueError):
        raise ToolError(f"value must be a number, e.g. 3.5 (got {str(value)[:MAX_VALUE_CHARS]!r})") from None
    if not number.is_finite():
        raise ToolError("value must be a finite number")
    if number != 0 and not -MAX_EXPONENT <= number.adjusted() <= MAX_EXPONENT:
        raise ToolError(f"value is out of range (magnitudes from 1e-{MAX_EXPONENT} to 1e{MAX_EXPONENT})")
    return number


def _light(text: str) -> str:
    """Case-preserving normalisation: ``µ`` is ``u``, degree signs go, ``³`` is ``3``, spaces collapse."""
    for old, new in (("µ", "u"), ("μ", "u"), ("°", ""), ("º", ""), ("²", "2"), ("³", "3")):
        text = text.replace(old, new)
    return " ".join(text.split())


def _loose(text: str) -> str:
    """Case-insensitive normalisation: also ``_``/``-``/``.`` and a leading "degrees" go, ``/`` is " per "."""
    text = _light(text).lower().replace("/", " per ").replace(".", " ")
    words = text.replace("_", " ").replace("-", " ").split()
    if len(words) > 1 and words[0] in _DEGREE_WORDS:
        words = words[1:]
    return " ".join(words)


def _variants(key: str) -> Iterator[str]:
    """``key``, then ``key`` with one word made singular ("miles per hour" -> "mile per hour")."""
    yield key
    words = key.split(" ")
    for i, word in enumerate(words):
        singular = _singular(word)
        if singular != word:
            yield " ".join([*words[:i], singular, *words[i + 1 :]])


def _singular(word: str) -> str:
    if word in _IRREGULAR:
        return _IRREGULAR[word]
    if len(word) < 4:  # "ms" is not two metres
        return word
    if word.endswith(("ches", "shes")):
        return word[:-2]
    if word.endswith("s") and not word.endswith(("ss", "us")):
        return word[:-1]
    return word


def _definitions(customary: Customary, data_prefixes: DataPrefixes) -> Iterator[tuple[Unit, tuple[str, ...]]]:
    """Every unit with its spellings (symbol and name first)."""

    def unit(
        symbol: str, name: str, dimension: Dimension, factor: Fraction | int | str, *aliases: str,
        offset: str | int = 0,
    ) -> tuple[Unit, tuple[str, ...]]:
        return Unit(symbol, name, dimension, Fraction(factor), Fraction(offset)), (symbol, name, *aliases)

    us = customary == "us"
    # length: metre
    yield unit("m", "metre", "length", 1, "meter")
    yield unit("km", "kilometre", "length", 1000, "kilometer")
    yield unit("cm", "centimetre", "length", "0.01", "centimeter")
    yield unit("mm", "millimetre", "length", "0.001", "millimeter")
    yield unit("µm", "micrometre", "length", "1e-6", "micrometer", "micron")
    yield unit("nm", "nanometre", "length", "1e-9", "nanometer")
    yield unit("in", "inch", "length", _INCH)
    yield unit("ft", "foot", "length", _FOOT, "feet")
    yield unit("yd", "yard", "length", _FOOT * 3, "yds")
    yield unit("mi", "mile", "length", _MILE)
    yield unit("nmi", "nautical mile", "length", 1852, "NM")
    # mass: kilogram
    yield unit("kg", "kilogram", "mass", 1, "kilo", "kgs")
    yield unit("g", "gram", "mass", "0.001", "gramme")
    yield unit("mg", "milligram", "mass", "1e-6")
    yield unit("µg", "microgram", "mass", "1e-9", "mcg")
    yield unit("t", "tonne", "mass", 1000, "metric ton", "metric tonne")
    yield unit("lb", "pound", "mass", _POUND, "lbs")
    yield unit("oz", "ounce", "mass", _POUND / 16, "ozs")
    yield unit("st", "stone", "mass", _POUND * 14)
    ton = ("ton", "tn")
    yield unit("sh tn", "short ton", "mass", _POUND * 2000, "US ton", *(ton if us else ()))
    yield unit("long tn", "long ton", "mass", _POUND * 2240, "imperial ton", "UK ton", *(() if us else ton))
    # temperature: kelvin (absolute temperatures, not differences)
    yield unit("K", "kelvin", "temperature", 1)
    yield unit("°C", "degree Celsius", "temperature", 1, "celsius", "centigrade", "degC", offset="273.15")
    yield unit("°F", "degree Fahrenheit", "temperature", Fraction(5, 9), "fahrenheit", "degF", offset="459.67")
    yield unit("°R", "degree Rankine", "temperature", Fraction(5, 9), "rankine", "degR")
    # volume: litre
    yield unit("L", "litre", "volume", 1, "liter", "l")
    yield unit("mL", "millilitre", "volume", "0.001", "milliliter", "cm³", "cc", "cubic centimetre", "cubic centimeter")
    yield unit("cL", "centilitre", "volume", "0.01", "centiliter")
    yield unit("dL", "decilitre", "volume", "0.1", "deciliter")
    yield unit("m³", "cubic metre", "volume", 1000, "cubic meter")
    yield unit("in³", "cubic inch", "volume", _INCH**3 * 1000)
    yield unit("ft³", "cubic foot", "volume", _FOOT**3 * 1000, "cubic feet")
    # symbol, name, bare spellings, parts of a US gallon, parts of an imperial gallon
    liquid = (
        ("gal", "gallon", ("gal", "gallon"), 1, 1),
        ("qt", "quart", ("qt", "quart"), 4, 4),
        ("pt", "pint", ("pt", "pint"), 8, 8),
        ("cup", "cup", ("cup",), 16, 16),
        ("fl oz", "fluid ounce", ("fl oz", "floz", "fluid ounce"), 128, 160),
    )
    for symbol, name, bare, us_parts, imperial_parts in liquid:
        yield unit(f"US {symbol}", f"US {name}", "volume", _US_GALLON / us_parts, *(bare if us else ()))
        yield unit(
            f"imp {symbol}", f"imperial {name}", "volume", _IMPERIAL_GALLON / imperial_parts, f"UK {name}",
            *(() if us else bare),
        )
    # speed: metre per second
    yield unit("m/s", "metre per second", "speed", 1, "meter per second")
    yield unit("km/h", "kilometre per hour", "speed", Fraction(1000, 3600), "kilometer per hour", "kph", "kmh", "km/hr")
    yield unit("mph", "mile per hour", "speed", _MILE / 3600, "mi/h")
    yield unit("kn", "knot", "speed", Fraction(1852, 3600), "kt", "kts")
    yield unit("ft/s", "foot per second", "speed", _FOOT, "feet per second", "fps")
    # data: byte
    yield unit("B", "byte", "data", 1)
    yield unit("bit", "bit", "data", Fraction(1, 8), "b")
    byte_base = 1024 if data_prefixes == "binary" else 1000
    for power, (prefix, word) in enumerate(_SI_PREFIXES, start=1):
        kilo = prefix == "k"
        yield unit(f"{prefix}B", f"{word}byte", "data", byte_base**power, *(("KB",) if kilo else ()))
        yield unit(
            f"{prefix}bit", f"{word}bit", "data", Fraction(1000**power, 8), f"{prefix}b",
            *(("Kbit", "Kb") if kilo else ()),
        )
    for power, (prefix, word) in enumerate(_IEC_PREFIXES, start=1):
        yield unit(f"{prefix}B", f"{word}byte", "data", 1024**power)
        yield unit(f"{prefix}bit", f"{word}bit", "data", Fraction(1024**power, 8), f"{prefix}b")
