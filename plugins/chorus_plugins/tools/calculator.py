"""Built-in tool ``calculator``: arithmetic, parsed with :mod:`ast` and never evaluated as Python.

Arguments ``{"expression": "..."}``. Only numbers, ``+ - * / // % **``, unary ``+``/``-``,
parentheses, the constants ``pi``, ``e``, ``tau`` and the functions in :data:`FUNCTIONS` are
accepted; anything else (names, attributes, subscripts, strings, comprehensions, lambdas, ...) is
refused before evaluation. Limits keep one call cheap: the expression length, the number of syntax
nodes, the size of exponents and of every intermediate integer. Every failure is a
:class:`~chorus.tools.ToolError` saying what is wrong. The result is ``{"result": number}``.
"""

from __future__ import annotations

import ast
import math
import operator
from collections.abc import Callable
from typing import Any

from chorus.tools import ToolContext, ToolDriver, ToolError, ToolSettings, ToolSpec

MAX_EXPONENT = 10_000
MAX_INT_BITS = 4096
MAX_NODES = 200
MAX_FACTORIAL = 1000
MAX_ARGS = 100

CONSTANTS: dict[str, float] = {"pi": math.pi, "e": math.e, "tau": math.tau}


def _round(x: float, ndigits: int | None = None) -> float:
    if ndigits is not None and not (isinstance(ndigits, int) and -100 <= ndigits <= 100):
        raise ToolError("round(x, n) takes an integer n between -100 and 100")
    return round(x, ndigits) if ndigits is not None else round(x)


def _factorial(n: float) -> int:
    if not isinstance(n, int) or not 0 <= n <= MAX_FACTORIAL:
        raise ToolError(f"factorial(n) takes an integer n between 0 and {MAX_FACTORIAL}")
    return math.factorial(n)


def _log(x: float, base: float | None = None) -> float:
    return math.log(x) if base is None else math.log(x, base)


#: name -> (function, minimum arguments, maximum arguments)
FUNCTIONS: dict[str, tuple[Callable[..., Any], int, int]] = {
    "abs": (abs, 1, 1),
    "round": (_round, 1, 2),
    "min": (min, 1, MAX_ARGS),
    "max": (max, 1, MAX_ARGS),
    "sqrt": (math.sqrt, 1, 1),
    "exp": (math.exp, 1, 1),
    "log": (_log, 1, 2),
    "log10": (math.log10, 1, 1),
    "log2": (math.log2, 1, 1),
    "sin": (math.sin, 1, 1),
    "cos": (math.cos, 1, 1),
    "tan": (math.tan, 1, 1),
    "asin": (math.asin, 1, 1),
    "acos": (math.acos, 1, 1),
    "atan": (math.atan, 1, 1),
    "atan2": (math.atan2, 2, 2),
    "sinh": (math.sinh, 1, 1),
    "cosh": (math.cosh, 1, 1),
    "tanh": (math.tanh, 1, 1),
    "degrees": (math.degrees, 1, 1),
    "radians": (math.radians, 1, 1),
    "floor": (math.floor, 1, 1),
    "ceil": (math.ceil, 1, 1),
    "hypot": (math.hypot, 1, MAX_ARGS),
    "factorial": (_factorial, 1, 1),
}

_BINARY: dict[type[ast.operator], Callable[[Any, Any], Any]] = {
    ast.Add: operator.add,
    ast.Sub: operator.sub,
    ast.Mult: operator.mul,
    ast.Div: operator.truediv,
    ast.FloorDiv: operator.floordiv,
    ast.Mod: operator.mod,
    ast.Pow: operator.pow,
}
_UNARY: dict[type[ast.unaryop], Callable[[Any], Any]] = {ast.UAdd: operator.pos, ast.USub: operator.neg}


class CalculatorSettings(ToolSettings):
    """``driver = "calculator"`` keys."""

    max_length: int = 500

    def __post_init__(self) -> None:
        if not 1 <= self.max_length <= 10_000:
            raise ValueError("max_length must be between 1 and 10000")


class CalculatorTool(ToolDriver):
    """Evaluate an arithmetic expression safely."""

    settings_type = CalculatorSettings
    settings: CalculatorSettings

    def tools(self) -> list[ToolSpec]:
        s = self.settings
        functions = ", ".join(FUNCTIONS)
        return [
            ToolSpec(
                name=s.name,
                description=s.description
                or f"Evaluate an arithmetic expression: + - * / // % ** and parentheses, "
                f"constants pi, e, tau and functions {functions}.",
                parameters={
                    "type": "object",
                    "properties": {"expression": {"type": "string", "description": "e.g. (2 + 3) * sqrt(16) / 4"}},
                    "required": ["expression"],
                },
            )
        ]

    async def call(self, name: str, arguments: dict[str, Any], ctx: ToolContext) -> Any:
        """Return ``{"result": number}`` for ``arguments["expression"]``."""
        expression = arguments.get("expression") if isinstance(arguments, dict) else None
        if not isinstance(expression, str):
            raise ToolError('arguments must be {"expression": "<arithmetic expression>"}')
        return {"result": evaluate(expression, max_length=self.settings.max_length)}


def evaluate(expression: str, *, max_length: int = 500) -> int | float:
    """The value of an arithmetic ``expression``; :class:`ToolError` for anything else or too big."""
    text = expression.strip()
    if not text:
        raise ToolError("the expression is empty")
    if len(text) > max_length:
        raise ToolError(f"the expression is longer than {max_length} characters")
    try:
        tree = ast.parse(text, mode="eval")
    except (SyntaxError, ValueError, RecursionError, MemoryError):
        raise ToolError(f"not a valid arithmetic expression: {text!r}") from None
    if sum(1 for _ in ast.walk(tree)) > MAX_NODES:
        raise ToolError(f"the expression has more than {MAX_NODES} parts")
    try:
        value = _eval(tree.body)
    except ZeroDivisionError:
        raise ToolError("division by zero") from None
    except OverflowError:
        raise ToolError("the result is too large") from None
    except (ValueError, TypeError) as exc:
        raise ToolError(f"math error: {exc}") from None
    except RecursionError:
        raise ToolError("the expression is nested too deeply") from None
    if isinstance(value, float) and not math.isfinite(value):
        raise ToolError("the result is not a finite number")
    if not isinstance(value, (int, float)):
        raise ToolError("the result is not a number")
    return value


def _eval(node: ast.AST) -> Any:
    if isinstance(node, ast.Constant):
        if isinstance(node.value, bool) or not isinstance(node.value, (int, float)):
            raise ToolError(f"only numbers are allowed, not {node.value!r}")
        return _checked(node.value)
    if isinstance(node, ast.BinOp):
        op = _BINARY.get(type(node.op))
        if op is None:
            hint = " (use ** for powers)" if isinstance(node.op, ast.BitXor) else ""
            raise ToolError(f"operator {type(node.op).__name__} is not allowed{hint}")
        left, right = _eval(node.left), _eval(node.right)
        if isinstance(node.op, ast.Pow):
            _check_power(left, right)
        return _checked(op(left, right))
    if isinstance(node, ast.UnaryOp):
        unary = _UNARY.get(type(node.op))
        if unary is None:
            raise ToolError(f"operator {type(node.op).__name__} is not allowed")
        return _checked(unary(_eval(node.operand)))
    if isinstance(node, ast.Name):
        if node.id not in CONSTANTS:
            raise ToolError(f"unknown name {node.id!r} (constants: {', '.join(CONSTANTS)})")
        return CONSTANTS[node.id]
    if isinstance(node, ast.Call):
        return _call(node)
    raise ToolError(f"{type(node).__name__} is not allowed in an arithmetic expression")


def _call(node: ast.Call) -> Any:
    if not isinstance(node.func, ast.Name):
        raise ToolError(f"{type(node.func).__name__} is not allowed in an arithmetic expression")
    if node.func.id not in FUNCTIONS:
        raise ToolError(f"unknown function (available: {', '.join(FUNCTIONS)})")
    if node.keywords or any(isinstance(a, ast.Starred) for a in node.args):
        raise ToolError("functions take plain positional arguments only")
    function, least, most = FUNCTIONS[node.func.id]
    if not least <= len(node.args) <= most:
        raise ToolError(f"{node.func.id}() takes {least}" + (f" to {most}" if most != least else "") + " argument(s)")
    return _checked(function(*(_eval(a) for a in node.args)))


def _check_power(base: Any, exponent: Any) -> None:
    if abs(exponent) > MAX_EXPONENT:
        raise ToolError(f"exponents are limited to {MAX_EXPONENT}")
    # A lower bound of the result's size, so a huge integer power is refused before it is computed.
    exact = isinstance(base, int) and isinstance(exponent, int)
    if exact and exponent > 0 and abs(base) > 1 and (abs(base).bit_length() - 1) * exponent > MAX_INT_BITS:
        raise ToolError("the result is too large")


def _checked(value: Any) -> Any:
    if isinstance(value, int) and not isinstance(value, bool) and value.bit_length() > MAX_INT_BITS:
        raise ToolError("the result is too large")
    if isinstance(value, complex):
        raise ToolError("the result is not a real number")
    return value
