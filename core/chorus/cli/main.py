"""The ``chorus`` command line: ``serve``, ``keys new|reset-default``, ``plugins``, ``config check``.

Failures are reported as one ``chorus: error: <message>`` line on standard error
(:mod:`chorus.cli.report`): exit status 2 for an invalid configuration (as for a bad command line),
1 for anything else.
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import sys
from collections.abc import MutableMapping, Sequence
from typing import TYPE_CHECKING, Any

from chorus import __version__
from chorus.cli.report import UsageError, error
from chorus.cli.source import CONFIG_ENV, load, uses_embedded_default
from chorus.contract.errors import ChorusError, ConfigError
from chorus.runtime.keys import digest, new_key

if TYPE_CHECKING:
    from litestar import Litestar

    from chorus.contract.config import Config

LOG_FORMAT = "%(asctime)s %(levelname)s %(name)s: %(message)s"
LOG_FORMAT_ENV = "CHORUS_LOG_FORMAT"  # how workers of --workers N log (set by `chorus serve`)
MULTIPROC_ENV = "PROMETHEUS_MULTIPROC_DIR"
GC_ENV = "CHORUS_GC_THRESHOLD"
GC_THRESHOLD = 7000  # generation-0 threshold of the cyclic GC while serving (Python's default: 700)


def tune_gc(threshold: int | None) -> None:
    """Garbage-collector settings for a long-running server, applied once the app is built.

    ``gc.freeze()`` moves everything alive after startup (modules, Litestar's route tables,
    plugin registries: ~75,000 objects) out of the collector's reach, so full collections no
    longer walk it on every pass (measured: ~25 ms per full collection before, ~2 ms after). A
    generation-0 threshold of 7,000 instead of 700 lets most request objects die by reference
    counting before a collection looks at them. Together: 5,700 -> 7,450 req/s and p99
    34 -> 5 ms on one core at c=32 (docs/benchmarks.md). ``threshold`` 0 keeps Python's
    thresholds (the freeze still applies).
    """
    import gc

    gc.collect()
    gc.freeze()
    if threshold:
        _, gen1, gen2 = gc.get_threshold()
        gc.set_threshold(threshold, gen1, gen2)


def configure_logging(log_format: str = "text") -> None:
    """How every Chorus process logs: INFO and above to stderr, with time, level and logger name
    (``"text"``), or one JSON object per line (``"json"``: ``--log-format json``).

    The ``chorus`` command calls it, and so does each worker of ``--workers N`` (:func:`app_factory`):
    workers are fresh interpreters (``spawn``) that would otherwise drop INFO lines and print
    warnings bare. In text mode a process whose logging is already configured keeps it; JSON
    replaces the root handlers.
    """
    if log_format == "json":
        from chorus.runtime.observe import JsonFormatter

        handler = logging.StreamHandler()
        handler.setFormatter(JsonFormatter())
        logging.basicConfig(level=logging.INFO, handlers=[handler], force=True)
    else:
        logging.basicConfig(level=logging.INFO, format=LOG_FORMAT)
    for noisy in ("httpx", "httpcore"):  # one line per upstream request is noise (and CPU) on the hot path
        logging.getLogger(noisy).setLevel(logging.WARNING)


def uvicorn_log_config(log_format: str) -> dict[str, Any] | None:
    """uvicorn's logging in JSON mode: its loggers hand their records to the root's JSON handler."""
    if log_format != "json":
        return None  # uvicorn's defaults
    loggers = {name: {"handlers": [], "propagate": True, "level": "INFO"}
               for name in ("uvicorn", "uvicorn.error", "uvicorn.access")}
    return {"version": 1, "disable_existing_loggers": False, "loggers": loggers}


def with_log_format(config: Config, log_format: str | None) -> Config:
    """``config`` with ``[server] log_format`` overridden (``--log-format``, or the workers' environment)."""
    import msgspec

    if not log_format or log_format == config.server.log_format:
        return config
    return msgspec.structs.replace(config, server=msgspec.structs.replace(config.server, log_format=log_format))


def prepare_multiprocess_metrics(configured_data_dir: str | None, env: MutableMapping[str, str]) -> str:
    """A fresh ``<data dir>/metrics`` for the workers' Prometheus files, set as ``$PROMETHEUS_MULTIPROC_DIR``.

    Files left by an earlier run are removed: counters restart at zero with the server, as a single
    process's do (Prometheus handles the reset).
    """
    import shutil

    from chorus.runtime.defaults import data_dir

    directory = data_dir(configured_data_dir, env) / "metrics"
    if directory.exists():
        shutil.rmtree(directory)
    directory.mkdir(parents=True)
    env[MULTIPROC_ENV] = str(directory)
    return str(directory)


def app_factory() -> Litestar:
    """ASGI app factory for multi-worker serving (reads ``$CHORUS_CONFIG`` or the default); each worker
    configures logging as the ``chorus`` command does."""
    from chorus.server.app import create_app

    log_format = os.environ.get(LOG_FORMAT_ENV) or None
    configure_logging(log_format or "text")
    app = create_app(with_log_format(load(None)[0], log_format))
    tune_gc(int(os.environ.get(GC_ENV) or GC_THRESHOLD))
    return app


def _check_in_child(config_path: str | None) -> None:
    """Build the app once in a short-lived child process (``chorus config check``).

    The supervisor of ``--workers N`` serves nothing itself; validating in a child keeps Litestar,
    the plugins and their drivers out of its memory (each worker builds its own app).
    """
    import subprocess

    argv = ["config", "check"] + (["--config", os.path.abspath(config_path)] if config_path else [])
    code = f"import sys\nfrom chorus.cli import main\nsys.exit(main({argv!r}))"
    result = subprocess.run([sys.executable, "-c", code], stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True,
                            check=False)
    if result.returncode != 0:
        sys.stderr.write(result.stderr)
        raise SystemExit(result.returncode)


def cmd_serve(args: argparse.Namespace) -> int:
    """Validate the configuration, then serve until interrupted."""
    import uvicorn

    config, fresh_key = load(args.config)
    config = with_log_format(config, args.log_format)
    log_format = config.server.log_format
    if log_format != "text":
        configure_logging(log_format)
    host = args.host or config.server.host
    port = args.port or config.server.port
    workers = args.workers or config.server.workers
    app = None
    if workers > 1:
        _check_in_child(args.config)  # drivers and references are validated before binding the port
    else:
        from chorus.server.app import create_app

        app = create_app(config)  # validates drivers and references before binding the port
    if uses_embedded_default(args.config):
        print(default_key_notice(fresh_key), file=sys.stderr)
    print(f"Chorus {__version__} serving the OpenAI API at http://{host}:{port}/v1", file=sys.stderr)
    if config.server.playground:
        print(f"Playground: http://{host}:{port}/", file=sys.stderr)
    options: dict[str, Any] = {"host": host, "port": port, "access_log": args.access_log, "log_level": "info",
                               "lifespan": "on"}
    log_config = uvicorn_log_config(log_format)
    if log_config is not None:
        options["log_config"] = log_config
    if app is None:
        if args.config:
            os.environ[CONFIG_ENV] = os.path.abspath(args.config)
        os.environ[GC_ENV] = str(args.gc_threshold)
        os.environ[LOG_FORMAT_ENV] = log_format
        metrics = config.metrics
        metrics_server = None
        if metrics.enabled:  # every worker writes its samples there; any of them (or the port below) sums them
            prepare_multiprocess_metrics(config.data_dir, os.environ)
            if metrics.port is not None:
                from chorus.runtime.observe import render
                from chorus.server.metrics_port import SUPERVISED_ENV, MetricsServer

                os.environ[SUPERVISED_ENV] = "1"
                token = metrics.bearer_token.get() if metrics.bearer_token else None
                metrics_server = MetricsServer(metrics.host, metrics.port, render, token).start()
        from chorus.cli import workers as supervisor

        try:
            if supervisor.reuse_port_available():
                options.pop("host")
                options.pop("port")
                return supervisor.serve(host, port, workers, options)
            uvicorn.run("chorus.cli.main:app_factory", factory=True, workers=workers, **options)
        finally:
            if metrics_server is not None:
                metrics_server.stop()
    else:
        tune_gc(args.gc_threshold)
        uvicorn.run(app, **options)
    return 0


def command_name() -> str:
    """How the user ran this command (``.venv/bin/chorus`` as typed), for hints; ``chorus`` otherwise."""
    invoked = sys.argv[0] if sys.argv else ""
    return invoked if os.path.basename(invoked) == "chorus" else "chorus"


def default_key_notice(fresh_key: str | None) -> str:
    """What ``chorus serve`` says about the default workspace's key on every start of the embedded
    default: the key itself on the first start, and always how to replace a lost one."""
    from chorus.runtime.defaults import KEY_FILE, data_dir

    recover = f"{command_name()} keys reset-default"
    if fresh_key:
        return ("Created the default workspace. Its API key is shown only this once; only its hash is stored:\n\n"
                f"    {fresh_key}\n\n"
                f"Lost it later? `{recover}` makes a new one (then restart the server).")
    return (f"Default workspace: its API key was shown on the first start; only its hash is kept "
            f"({data_dir() / KEY_FILE}). Lost it? `{recover}` makes a new one (then restart the server).")


def cmd_keys_reset_default(args: argparse.Namespace) -> int:
    """Replace the embedded default workspace's key; print the new key (stdout) once."""
    from chorus.runtime.defaults import KEY_FILE, data_dir, reset_default_key

    directory = data_dir()
    existed = (directory / KEY_FILE).exists()
    key = reset_default_key(directory)
    print(key)
    print(("Replaced" if existed else "Created") + f" the default workspace's key; only its hash is stored "
          f"({directory / KEY_FILE}). It is shown only this once. Restart `chorus serve` to use it: the old key "
          "stops working then.", file=sys.stderr)
    if os.environ.get(CONFIG_ENV):
        print(f"Note: ${CONFIG_ENV} is set; this key belongs to the embedded default configuration, which "
              "serves only without a configuration file.", file=sys.stderr)
    return 0


def cmd_keys_new(args: argparse.Namespace) -> int:
    """Print a fresh key and the ``sha256:`` form to put in configuration."""
    key = new_key()
    print(f"key:    {key}\nconfig: {digest(key)}")
    where = "[server] admin_keys (opens /admin/v1)" if args.admin else "a workspace's api_keys"
    print(f"put the config line's value in {where}", file=sys.stderr)
    return 0


def cmd_plugins(args: argparse.Namespace) -> int:
    """List installed plugins and drivers, the hooks they implement, and load failures."""
    from chorus.plugins.manager import PluginManager

    pm = PluginManager()
    loaded = pm.describe()
    if args.json:
        print(json.dumps({
            "plugins": [
                {"group": p.group, "name": p.name, "distribution": p.distribution, "version": p.version, "hooks": p.hooks}
                for p in loaded
            ],
            "failures": [
                {"group": f.group, "name": f.name, "distribution": f.distribution, "error": f.error} for f in pm.failures
            ],
        }, indent=2))
        return 0
    rows = [("DISTRIBUTION", "VERSION", "GROUP", "NAME", "HOOKS")]
    rows += [(p.distribution, p.version, p.group, p.name, ", ".join(p.hooks) or "-") for p in loaded]
    widths = [max(len(r[i]) for r in rows) for i in range(4)]
    for row in rows:
        print("  ".join(cell.ljust(widths[i]) for i, cell in enumerate(row[:4])) + "  " + row[4])
    for failure in pm.failures:
        print(f"FAILED  {failure.distribution}  {failure.group}  {failure.name}: {failure.error}")
    return 1 if pm.failures and args.strict else 0


def cmd_config_check(args: argparse.Namespace) -> int:
    """Load the configuration and build the app without serving."""
    from chorus.server.app import create_app

    config, _ = load(args.config)
    create_app(config)
    counts = [(len(config.providers), "provider"), (len(config.workspaces), "workspace"), (len(config.bots), "bot"),
              (len(config.datasets), "dataset"), (len(config.skillsets), "skillset"),
              (len(config.search_engines), "search engine")]
    print("ok: " + ", ".join(f"{n} {noun}{'' if n == 1 else 's'}" for n, noun in counts))
    return 0


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="chorus", description="OpenAI-compatible gateway for AI systems.")
    parser.add_argument("--version", action="version", version=f"chorus {__version__}")
    sub = parser.add_subparsers(dest="command", required=True)

    serve = sub.add_parser("serve", help="serve the API")
    serve.add_argument("--config", help=f"TOML configuration (default: ${CONFIG_ENV}, else the embedded default)")
    serve.add_argument("--host")
    serve.add_argument("--port", type=int)
    serve.add_argument("--workers", type=int, help="worker processes (default: server.workers, 1)")
    serve.add_argument("--access-log", action="store_true", help="log every request line")
    serve.add_argument("--log-format", choices=["text", "json"],
                       help="text lines (default: server.log_format, text) or one JSON object per line, with one "
                            "line per request")
    serve.add_argument("--gc-threshold", type=int, default=GC_THRESHOLD, metavar="N",
                       help=f"generation-0 threshold of Python's garbage collector while serving (default {GC_THRESHOLD}; "
                            "0 keeps Python's own); the startup heap is frozen either way")
    serve.set_defaults(func=cmd_serve)

    keys = sub.add_parser("keys", help="API key utilities").add_subparsers(dest="keys_command", required=True)
    new = keys.add_parser("new", help="print a new random key and its sha256: form (for a workspace's api_keys or, "
                          "with --admin, for [server] admin_keys)")
    new.add_argument("--admin", action="store_true",
                     help="an admin key: put its sha256: form in [server] admin_keys to open /admin/v1 "
                     "(the same kind of key; only where it is configured differs)")
    new.set_defaults(func=cmd_keys_new)
    keys.add_parser("reset-default", help="replace the embedded default workspace's key (a lost key cannot be shown "
                    "again); prints the new key once").set_defaults(func=cmd_keys_reset_default)

    plugins = sub.add_parser("plugins", help="list installed plugins")
    plugins.add_argument("--json", action="store_true")
    plugins.add_argument("--strict", action="store_true", help="exit 1 if any plugin failed to load")
    plugins.set_defaults(func=cmd_plugins)

    from chorus.cli.datasets import add_parser as add_datasets
    from chorus.cli.state import add_parser as add_state

    add_datasets(sub)
    add_state(sub)

    config = sub.add_parser("config", help="configuration utilities").add_subparsers(dest="config_command", required=True)
    check = config.add_parser("check", help="validate a configuration")
    check.add_argument("--config")
    check.set_defaults(func=cmd_config_check)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of the ``chorus`` script."""
    configure_logging()
    args = build_parser().parse_args(argv)
    try:
        return int(args.func(args))
    except ConfigError as exc:
        error(f"invalid configuration: {exc}")
        return 2
    except UsageError as exc:
        error(str(exc))
        return 2
    except ChorusError as exc:  # e.g. the state store is unreachable
        error(exc.message)
        return 1


if __name__ == "__main__":
    sys.exit(main())
