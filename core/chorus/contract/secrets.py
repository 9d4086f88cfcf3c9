"""A wrapper that keeps secret strings out of reprs, logs and error messages."""

from __future__ import annotations

from typing import Any


class Secret:
    """A secret value (API key, token). ``str()``/``repr()`` never show it; call :meth:`get`."""

    __slots__ = ("_value",)

    def __init__(self, value: str) -> None:
        self._value = value

    def get(self) -> str:
        """Return the secret itself. Use it only where it leaves the process (an auth header)."""
        return self._value

    def __bool__(self) -> bool:
        return bool(self._value)

    def __eq__(self, other: object) -> bool:
        return isinstance(other, Secret) and other._value == self._value

    def __hash__(self) -> int:
        return hash(self._value)

    def __repr__(self) -> str:
        return "Secret('**********')"

    __str__ = __repr__


def dec_hook(type_: type, obj: Any) -> Any:
    """msgspec ``dec_hook`` that builds :class:`Secret` from strings."""
    if type_ is Secret:
        if not isinstance(obj, str):
            raise TypeError(f"expected a string, got {type(obj).__name__}")
        return Secret(obj)
    raise NotImplementedError(f"unsupported type {type_!r}")
