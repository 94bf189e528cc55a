"""`mock-pi` command line: flags override `MOCK_PI_` variables."""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence

from pydantic import ValidationError

from mock_pi.settings import MockSettings


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="mock-pi", description="PI Web API simulator served under /piwebapi."
    )
    for name, field in MockSettings.model_fields.items():
        kind = field.annotation if field.annotation in (int, float, bool) else str
        about = f"MOCK_PI_{name.upper()}" + (f": {field.description}" if field.description else "")
        if kind is bool:
            parser.add_argument(
                f"--{name.replace('_', '-')}",
                type=lambda v: v.lower() in ("1", "true", "yes"),
                help=about,
            )
        else:
            parser.add_argument(f"--{name.replace('_', '-')}", type=kind, help=about)
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
