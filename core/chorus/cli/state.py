"""``chorus state``: the state store of a configuration (``migrate``, ``status``).

``migrate`` applies the PostgreSQL schema migrations a release needs (what ``[state] migrate =
"auto"`` does at startup), for operators who migrate before rolling instances out and run them
with ``migrate = "check"``. ``status`` says which backend a configuration uses and what is pending.
"""

from __future__ import annotations

import argparse
import asyncio

from chorus.cli.report import error
from chorus.cli.source import load
from chorus.contract.config import Config
from chorus.contract.errors import StateUnavailable


async def _migrate(config: Config, *, apply: bool) -> int:
    import asyncpg

    from chorus.runtime.defaults import data_dir
    from chorus.storage.postgres.database import UNAVAILABLE, Database, migrate, pending, quote_ident

    if config.state.url is None:
        print(f"state: embedded SQLite in {data_dir(config.data_dir)}; its tables are created when opened "
              "(nothing to migrate)")
        return 0
    db = Database(config.state.url.get(), schema=config.state.schema, timeout=config.state.connect_timeout)
    try:
        conn = await asyncpg.connect(db.url, timeout=db.timeout)
    except UNAVAILABLE as exc:
        raise StateUnavailable(f"PostgreSQL at {db.where} is unreachable: {type(exc).__name__}") from None
    try:
        await conn.execute(f"CREATE SCHEMA IF NOT EXISTS {quote_ident(db.schema)}")
        await conn.execute(f"SET search_path TO {quote_ident(db.schema)}")
        if apply:
            applied = await migrate(conn, db.schema)
            print(f"state: PostgreSQL {db.where}: " + (f"applied migrations {applied}" if applied else "up to date"))
        else:
            missing = await pending(conn)
            print(f"state: PostgreSQL {db.where}: " + (f"pending migrations {missing}" if missing else "up to date"))
            return 1 if missing else 0
    finally:
        await conn.close()
    return 0


def cmd_state(args: argparse.Namespace) -> int:
    config, _ = load(args.config)
    try:
        return asyncio.run(_migrate(config, apply=args.state_command == "migrate"))
    except StateUnavailable as exc:
        error(exc.message)
        return 1


def add_parser(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    """Register ``chorus state ...``."""
    state = sub.add_parser("state", help="the state store: migrate, status")
    commands = state.add_subparsers(dest="state_command", required=True)
    for name, text in (("migrate", "apply pending PostgreSQL schema migrations"),
                       ("status", "show the state backend and pending migrations (exit 1 if any)")):
        command = commands.add_parser(name, help=text)
        command.add_argument("--config", help="TOML configuration (default: $CHORUS_CONFIG, else the embedded default)")
    state.set_defaults(func=cmd_state)
