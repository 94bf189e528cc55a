"""`mock-pi` command line: flags override `MOCK_PI_` variables."""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence

from pydantic import SecretStr, ValidationError

from mock_pi.settings import MockSettings

# Help of the settings declared without a description (`mock-pi --help`); a test checks
# that every setting has one or the other.
HELP: dict[str, str] = {
    "host": "address to listen on",
    "port": "port to listen on",
    "tag_count": "PI points served (names like TI-0000001.PV, several point types)",
    "seed": "seed of every value, point, AF element and fault: same seed, same answers",
    "history_days": "days of recorded history served before now",
    "auth": "none, basic or bearer",
    "username": "user name accepted (basic)",
    "password": "password accepted (basic)",
    "token": "token accepted (bearer)",
    "late_fraction": "share of tags whose values arrive late",
    "late_seconds": "how late those values arrive, in seconds",
    "max_returned_items_per_call": "items one call may return; more is an error, as in PI",
    "max_url_bytes": "longest URL accepted (longer: HTTP 414)",
    "max_body_bytes": "largest request body accepted (larger: HTTP 413)",
    "csrf": "require X-Requested-With on POST, PUT, PATCH and DELETE, as PI does",
}


def setting_help(name: str) -> str:
    """A setting's help: its description, else its entry in HELP."""
    return MockSettings.model_fields[name].description or HELP.get(name, "")


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="mock-pi",
        description="PI Web API simulator served under /piwebapi. Every flag has a MOCK_PI_ "
        "environment variable of the same name; flags override them.",
    )
    for name, field in MockSettings.model_fields.items():
        kind = field.annotation if field.annotation in (int, float, bool) else str
        default = field.get_default(call_default_factory=True)
        shown = "" if isinstance(default, SecretStr) or default in (None, "") else f" [{default}]"
        text = f"{setting_help(name)} (MOCK_PI_{name.upper()}){shown}".replace("%", "%%")
        if kind is bool:
            parser.add_argument(
                f"--{name.replace('_', '-')}",
                type=lambda v: v.lower() in ("1", "true", "yes"),
                help=text,
            )
        else:
            parser.add_argument(f"--{name.replace('_', '-')}", type=kind, help=text)
    return parser


def describe(exc: ValidationError) -> list[str]:
    """One `MOCK_PI_NAME: what is wrong` per bad setting, in field order, without its value."""
    problems: dict[str, list[str]] = {}
    for error in exc.errors(include_url=False, include_input=False):
        name = "MOCK_PI_" + "_".join(str(part) for part in error["loc"]).upper()
        cause = (error.get("ctx") or {}).get("error")
        # A validator's own ValueError says it best; pydantic would prefix "Value error, ".
        text = str(cause) if error["type"] == "value_error" and cause is not None else error["msg"]
        problems.setdefault(name, []).append(text)
    return [f"{name}: {'; '.join(texts)}" for name, texts in problems.items()]


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    overrides = {k: v for k, v in vars(args).items() if v is not None}
    try:
        settings = MockSettings(**overrides)
    except ValidationError as exc:
        for line in describe(exc):
            print(f"mock-pi: invalid configuration: {line}", file=sys.stderr)
        return 2
    from mock_pi.app import serve

    serve(settings)
    return 0


if __name__ == "__main__":
    sys.exit(main())
