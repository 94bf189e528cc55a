"""`pidelta` command line: parse, build the settings once, dispatch, map errors to exit codes.

Exit codes (contract): 0 done; 2 bad configuration or arguments (one line, no traceback);
1 anything else, logged.
"""

from __future__ import annotations

import argparse
import atexit
import importlib
import logging
import os
import sys
from collections.abc import Callable, Sequence
from typing import NoReturn

from service.failures import explain
from service.version import package_version
from workers.errors import ConfigError
from workers.settings import Settings, load_settings
from workers.settings_help import setting_help, setting_variables, unknown_variables

log = logging.getLogger("pidelta")

# Command-line flags that override a setting of the same name.
_GLOBAL_FLAGS: tuple[tuple[str, str, type], ...] = (
    ("--pi-url", "PI Web API base URL (PIDELTA_PI_URL)", str),
    ("--target", "table location: folder, s3://, az://, gs://, uc:// (PIDELTA_TARGET)", str),
    ("--shard-index", "shard this worker owns (PIDELTA_SHARD_INDEX)", int),
    ("--shard-count", "number of shards (PIDELTA_SHARD_COUNT)", int),
    ("--tag-filter", "PI point name filter (PIDELTA_TAG_FILTER)", str),
    ("--start", "start of a tag with no checkpoint (PIDELTA_START)", str),
    ("--metrics-port", "port of /metrics, /healthz, /readyz (PIDELTA_METRICS_PORT)", int),
    ("--log-format", "text or json (PIDELTA_LOG_FORMAT)", str),
)


class _Parser(argparse.ArgumentParser):
    """argparse that reports a usage error as one line and exit code 2."""

    def error(self, message: str) -> None:  # type: ignore[override]
        raise ConfigError(f"{message} (see `{self.prog} --help`)")


def build_parser() -> argparse.ArgumentParser:
    parser = _Parser(
        prog="pidelta",
        description=(
            "Copy PI System time series, AF and event frames into Delta tables, exactly once. "
            "Configured by PIDELTA_* environment variables; flags override them."
        ),
        epilog=_settings_epilog(),
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("--version", action="version", version=f"pidelta {package_version()}")
    _add_global_flags(parser, default=None)
    sub = parser.add_subparsers(dest="command", metavar="COMMAND", parser_class=_Parser)
    sub.required = True
    sub.add_parser("run", help="continuous worker for one shard until SIGTERM/SIGINT")
    sub.add_parser("once", help="catch this shard up to now minus the safety lag, then exit")
    backfill = sub.add_parser(
        "backfill",
        help="load a historical range for this shard",
        description="Loads every value with start <= timestamp <= end: a value stamped "
        "exactly at --start is loaded (as one stamped exactly at PIDELTA_START is by run "
        "and once). The end is capped at now minus the safety lag; the same command run "
        "after the end has passed loads the rest.",
    )
    backfill.add_argument(
        "--start", dest="backfill_start", required=True, help="range start (inclusive): a time"
    )
    backfill.add_argument(
        "--end",
        dest="backfill_end",
        required=True,
        help="range end (inclusive): a time; capped at now minus the safety lag",
    )
    sub.add_parser("discover", help="list the tags in scope and their owning shard")
    shards = sub.add_parser("shards", help="shard planning")
    shards_sub = shards.add_subparsers(dest="shards_command", metavar="SUBCOMMAND")
    shards_sub.required = True
    plan = shards_sub.add_parser("plan", help="how tags spread over N shards")
    plan.add_argument("--shards", type=int, required=True, help="number of shards N")
    sub.add_parser(
        "status",
        help="shards by generation (lag, missing, stale), backfill progress, rows and files "
        "per table",
    )
    sub.add_parser("af", help="one sync of the AF hierarchy and attributes")
    sub.add_parser("events", help="one sync of event frames (alarms included)")
    sub.add_parser(
        "points", help="one sync of this shard's points (with history) and digital state sets"
    )
    maintain = sub.add_parser(
        "maintain", help="compact, checkpoint, vacuum and clean the logs of pidelta's tables"
    )
    maintain.add_argument(
        "--table",
        dest="tables",
        action="append",
        default=None,
        help="only this table (repeatable); default every table pidelta owns",
    )
    verify = sub.add_parser(
        "verify",
        help="compare this shard's pi_timeseries with PI per tag and bucket, repair, record",
        description="Buckets are [start, end) from UTC midnight (PIDELTA_VERIFY_BUCKET); "
        "--start and --end are widened to whole buckets, and buckets still open (ending "
        "after now minus PIDELTA_SAFETY_LAG) are left out. Exit 0 when the range ends equal "
        "to PI, 1 when a bucket differs (--dry-run) or could not be repaired.",
    )
    verify.add_argument("--start", dest="verify_start", required=True, help="ISO 8601 or PI")
    verify.add_argument("--end", dest="verify_end", required=True, help="ISO 8601 or PI")
    verify.add_argument(
        "--dry-run", action="store_true", help="report only: repair and record nothing"
    )
    for command in (*sub.choices.values(), *shards_sub.choices.values()):
        _add_global_flags(command, default=argparse.SUPPRESS)
    return parser


def _add_global_flags(parser: argparse.ArgumentParser, default: object) -> None:
    """The global flags, on the main parser and again on each command, so that they may
    stand before or after it; on a command they default to SUPPRESS, which keeps a value
    given before the command. A command's own flag of the same name wins (backfill's
    --start is its range, the global one is PIDELTA_START)."""
    for flag, help_text, kind in _GLOBAL_FLAGS:
        if flag not in parser._option_string_actions:
            parser.add_argument(flag, help=help_text, type=kind, default=default)


def _settings_epilog() -> str:
    lines = [
        "Times are ISO 8601 (2026-11-27T00:00:00Z; a time without a zone is UTC) or PI time",
        "strings (*, *-1d, t, y+6h).",
        "",
        "environment variables [default]:",
    ]
    for name, field in Settings.model_fields.items():
        default = field.get_default(call_default_factory=True)
        shown = "" if default in (None, {}, "") else f" [{default}]"
        lines.append(f"  {' or '.join(setting_variables(name))}{shown}")
        lines.append(f"      {setting_help(name)}")
    return "\n".join(lines)


# command -> (module, function): a command imports only its own module, so `backfill`
# and `once` do not import the AF and event frame code they never run (~0.07 s).
_HANDLERS: dict[str, tuple[str, str]] = {
    "run": ("service.commands", "run"),
    "once": ("service.commands", "once"),
    "backfill": ("service.commands", "backfill"),
    "discover": ("service.commands", "discover"),
    "shards": ("service.commands", "shards_plan"),
    "status": ("service.commands", "status"),
    "af": ("service.commands_af", "af"),
    "events": ("service.commands_af", "events"),
    "points": ("service.commands_points", "points"),
    "maintain": ("service.commands_maintain", "maintain"),
    "verify": ("service.commands_verify", "verify"),
}


def _dispatch(args: argparse.Namespace, settings: Settings) -> int:
    module, name = _HANDLERS[args.command]
    handler: Callable[[argparse.Namespace, Settings], int] = getattr(
        importlib.import_module(module), name
    )
    return handler(args, settings)


def main(argv: Sequence[str] | None = None) -> int:
    """The command in this process: the wheel task on Databricks (through `console`), tests.

    A failure leaves as SystemExit, not as a returned code: a Databricks Python wheel task
    calls this function and ignores what it returns, so only an exit fails the task run.
    """
    code = run_cli(argv)
    if code:
        raise SystemExit(code)
    return 0


def console() -> None:
    """The `pidelta` console script and `python -m service`: `main`, then end without finalizing.

    A pyarrow scan of a Delta table reads through a Python filesystem from Arrow's own
    threads, and one still releasing a file while the interpreter finalizes aborts the
    process ("terminate called without an active exception", exit -6; apache/arrow#34314):
    one short run in twenty here. Every command has committed what it writes before it
    returns, so the process flushes its logs and streams, runs its exit handlers and ends
    with `os._exit`. On Databricks the runtime owns the process, so the wheel task returns
    as `main` does.
    """
    if os.environ.get("DATABRICKS_RUNTIME_VERSION"):
        main()
        return
    try:
        code = run_cli()
    except SystemExit as exc:  # --help and --version
        code = exc.code if isinstance(exc.code, int) else 0 if exc.code is None else 2
    end_process(code)


def end_process(code: int) -> NoReturn:
    """Flush logs and streams, run the exit handlers, and end without finalizing (see `console`)."""
    logging.shutdown()
    sys.stdout.flush()
    sys.stderr.flush()
    atexit._run_exitfuncs()
    os._exit(code)


def run_cli(argv: Sequence[str] | None = None) -> int:
    """Parse, build the settings once, dispatch; the exit code of the contract."""
    try:
        args = build_parser().parse_args(argv)
        overrides = {
            flag.lstrip("-").replace("-", "_"): getattr(args, flag.lstrip("-").replace("-", "_"))
            for flag, _, _ in _GLOBAL_FLAGS
        }
        settings = load_settings(**overrides)
    except ConfigError as exc:
        print(f"pidelta: {exc}", file=sys.stderr)
        return 2
    from service.logs import configure_logging

    configure_logging(settings)
    for name, close in unknown_variables():
        hint = f"; did you mean {close}?" if close else ""
        log.warning("%s is not a pidelta setting and is ignored%s", name, hint)
    try:
        return _dispatch(args, settings)
    except ConfigError as exc:
        print(f"pidelta: {exc}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        return 130
    except Exception as exc:
        log.error(
            "pidelta %s failed: %s",
            args.command,
            explain(exc, settings),
            exc_info=settings.log_level == "DEBUG",
        )
        return 1


if __name__ == "__main__":
    console()
