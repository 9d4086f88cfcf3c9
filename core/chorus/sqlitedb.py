"""Public import path. SQLite plumbing for drivers that keep a file in the data dir.

``connect_wal`` opens a connection in WAL mode with a busy timeout; ``immediate`` is a
``BEGIN IMMEDIATE`` transaction that commits or rolls back as a whole. The definitions live in
:mod:`chorus.storage.sqlitedb`.
"""

from chorus.storage.sqlitedb import connect_wal, immediate

__all__ = ["connect_wal", "immediate"]
