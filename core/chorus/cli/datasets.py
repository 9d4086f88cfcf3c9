"""``chorus datasets``: manage knowledge datasets from the command line (no server needed)."""

from __future__ import annotations

import argparse
import asyncio
import sys
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import TextIO

from chorus.cli.report import UsageError, error
from chorus.cli.source import load
from chorus.contract.config import Config
from chorus.contract.errors import ConfigError
from chorus.runtime.knowledge.service import Knowledge


class ProgressBar:
    """A one-line progress bar on a terminal (plain lines when not a TTY)."""

    def __init__(self, stream: TextIO | None = None, width: int = 30) -> None:
        self._stream = stream
        self.width = width

    @property
    def stream(self) -> TextIO:
        return self._stream or sys.stderr

    def __call__(self, name: str, done: int, total: int) -> None:
        filled = int(self.width * done / max(total, 1))
        line = f"[{'#' * filled}{'.' * (self.width - filled)}] {done}/{total} {name}"
        if self.stream.isatty():
            self.stream.write("\r" + line[:120].ljust(120))
            if done == total:
                self.stream.write("\n")
        else:
            self.stream.write(line + "\n")
        self.stream.flush()


@asynccontextmanager
async def open_knowledge(config: Config) -> AsyncIterator[Knowledge]:
    """The knowledge service of a configuration (its state store opened), with providers started
    for embeddings."""
    from chorus.plugins.manager import PluginManager
    from chorus.runtime.defaults import data_dir
    from chorus.runtime.registry import Registry
    from chorus.runtime.services import build_keyring, build_knowledge, build_providers
    from chorus.storage.state import open_state

    pm = PluginManager()
    providers = build_providers(config, pm) if config.knowledge.embedding_model else []
    registry = Registry.from_config(config, providers, build_keyring(config)) if providers else Registry(
        providers=[], workspaces=config.workspaces, bots=[], keyring=build_keyring(config))
    state = open_state(config, data_dir(config.data_dir))
    knowledge = build_knowledge(config, pm, registry, state.catalog)
    for provider in providers:
        await provider.start()
    await state.start()
    try:
        await knowledge.start()
        try:
            yield knowledge
        finally:
            await knowledge.aclose()
    finally:
        await state.aclose()
        for provider in providers:
            await provider.aclose()


def _workspace(config: Config, args: argparse.Namespace) -> str:
    if args.workspace:
        if args.workspace not in {w.id for w in config.workspaces}:
            raise UsageError(f"unknown workspace {args.workspace!r}")
        return str(args.workspace)
    if len(config.workspaces) == 1:
        return config.workspaces[0].id
    if not config.workspaces:
        raise ConfigError("no workspace is configured")
    raise UsageError("several workspaces are configured: pass --workspace")


async def _run(config: Config, args: argparse.Namespace) -> int:
    workspace = _workspace(config, args)
    async with open_knowledge(config) as knowledge:
        catalog = knowledge.catalog
        if args.datasets_command == "list":
            print(f"{'ID':28} {'NAME':24} {'ORIGIN':7} {'FILES':>5} {'FAILED':>6} {'CHUNKS':>7}")
            stored = await catalog.list_stores(workspace)
            for store in stored:
                files = await catalog.list_store_files(workspace, store.id)
                failed = sum(1 for f in files if f.status == "failed")
                chunks = sum(f.chunks for f in files)
                print(f"{store.id:28} {store.name[:24]:24} {store.origin:7} {len(files):>5} {failed:>6} {chunks:>7}")
            # datasets the configuration declares that were never ingested (the server ingests them
            # when it starts; `chorus datasets ingest <id>` does it now)
            known = {store.id for store in stored}
            pending = [d for d in config.datasets if d.workspace == workspace and d.id not in known]
            for d in pending:
                print(f"{d.id:28} {(d.name or d.id)[:24]:24} {'config':7} {'-':>5} {'-':>6} {'-':>7}  not ingested yet")
            if pending:
                print(f"\n{len(pending)} configured dataset{'s are' if len(pending) > 1 else ' is'} not ingested yet: "
                      "`chorus serve` ingests them at startup, `chorus datasets ingest <id>` now.")
            return 0
        if args.datasets_command == "create":
            store = await catalog.create_store(workspace, args.name, {})
            print(store.id)
            return 0
        dataset = args.dataset
        declared = next((d for d in config.datasets if d.id == dataset and d.workspace == workspace), None)
        if args.datasets_command == "ingest":
            bar = ProgressBar()
            if not args.paths and declared is not None:
                summary = await knowledge.sync_dataset(declared, progress=bar)
            else:
                if await catalog.get_store(workspace, dataset) is None:
                    error(f"no dataset {dataset!r} in workspace {workspace!r}")
                    return 1
                summary = await knowledge.ingest_paths(workspace, dataset, args.paths, bar)
            print(f"added {summary.added}, updated {summary.updated}, unchanged {summary.unchanged}, "
                  f"removed {summary.removed}, failed {len(summary.failed)}, chunks {summary.chunks}")
            for name, reason in summary.failed:
                error(f"{name} not ingested: {reason}")
            return 1 if summary.failed else 0
        if await catalog.get_store(workspace, dataset) is None:
            hint = " (configured, not ingested yet: `chorus datasets ingest " + dataset + "`)" if declared else ""
            error(f"no dataset {dataset!r} in workspace {workspace!r}{hint}")
            return 1
        if args.datasets_command == "search":
            for rank, hit in enumerate(await knowledge.search(workspace, [dataset], args.query, k=args.k), start=1):
                where = " › ".join([hit.chunk.source, *hit.chunk.headings])
                print(f"{rank}. {hit.score:.4f}  {where}\n   {hit.chunk.text[:200].strip()}")
            return 0
        if args.datasets_command == "delete":
            await knowledge.delete_dataset(workspace, dataset)
            print(f"deleted {dataset}")
            return 0
    return 2


def add_parser(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    """Register ``chorus datasets ...``."""
    datasets = sub.add_parser("datasets", help="manage knowledge datasets")
    commands = datasets.add_subparsers(dest="datasets_command", required=True)
    common = argparse.ArgumentParser(add_help=False)
    common.add_argument("--config", help="TOML configuration (default: $CHORUS_CONFIG, else the embedded default)")
    common.add_argument("--workspace", help="workspace id (needed when several are configured)")
    commands.add_parser("list", parents=[common], help="list datasets")
    create = commands.add_parser("create", parents=[common], help="create an empty dataset; prints its id")
    create.add_argument("--name", default="")
    ingest = commands.add_parser("ingest", parents=[common], help="ingest files (or a config dataset's sources)")
    ingest.add_argument("dataset")
    ingest.add_argument("paths", nargs="*", help="files or glob patterns (quote ** patterns)")
    search = commands.add_parser("search", parents=[common], help="search a dataset")
    search.add_argument("dataset")
    search.add_argument("query")
    search.add_argument("-k", type=int, default=5)
    delete = commands.add_parser("delete", parents=[common], help="delete a dataset and its chunks")
    delete.add_argument("dataset")
    datasets.set_defaults(func=cmd_datasets)


def cmd_datasets(args: argparse.Namespace) -> int:
    config, _ = load(args.config)
    return asyncio.run(_run(config, args))
