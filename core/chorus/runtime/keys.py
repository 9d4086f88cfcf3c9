"""API keys: generation, hashing and the key ring that maps a presented key to its workspace.

Keys are never stored or logged in clear once loaded: the ring holds SHA-256 digests only and
compares them with :func:`hmac.compare_digest` against every entry (no early exit).
"""

from __future__ import annotations

import hashlib
import hmac
import secrets
from collections.abc import Iterable

KEY_PREFIX = "sk-chorus-"
DIGEST_PREFIX = "sha256:"


def new_key() -> str:
    """A fresh random key with 256 bits of entropy."""
    return KEY_PREFIX + secrets.token_urlsafe(32)


def digest(key: str) -> str:
    """The ``sha256:<hex>`` form of ``key``, as written in configuration."""
    return DIGEST_PREFIX + hashlib.sha256(key.encode("utf-8")).hexdigest()


def as_digest(entry: str) -> bytes:
    """Raw digest bytes of a configured key entry (clear text or ``sha256:`` form)."""
    if entry.startswith(DIGEST_PREFIX):
        return bytes.fromhex(entry[len(DIGEST_PREFIX) :])
    return hashlib.sha256(entry.encode("utf-8")).digest()


class KeyRing:
    """Maps API keys to workspace ids."""

    __slots__ = ("_entries",)

    def __init__(self, entries: Iterable[tuple[str, str]] = ()) -> None:
        self._entries: list[tuple[bytes, str]] = [(as_digest(key), ws) for key, ws in entries]

    def add(self, key_entry: str, workspace: str) -> None:
        """Accept ``key_entry`` (clear text or ``sha256:`` digest) for ``workspace``."""
        self._entries.append((as_digest(key_entry), workspace))

    def workspace_for(self, presented: str) -> str | None:
        """The workspace the presented key belongs to, or ``None``. Constant time in the key."""
        return self.workspace_for_digest(hashlib.sha256(presented.encode("utf-8", "surrogateescape")).digest())

    def workspace_for_digest(self, wanted: bytes) -> str | None:
        """:meth:`workspace_for` of a key already hashed (raw SHA-256 bytes)."""
        found: str | None = None
        for stored, workspace in self._entries:
            if hmac.compare_digest(stored, wanted):
                found = workspace
        return found

    def __len__(self) -> int:
        return len(self._entries)
