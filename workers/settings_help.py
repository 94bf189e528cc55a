"""The environment variables the settings read: their names, their help (`pidelta
--help`, the README test) and the `PIDELTA_` variables no setting reads."""

from __future__ import annotations

import difflib
import os

from pydantic import AliasChoices

from workers.settings import Settings

# PIDELTA_ variables read outside the settings: by the build (setup.py) and the tests.
NOT_SETTINGS = frozenset({"PIDELTA_PURE_WHEEL", "PIDELTA_REFERENCE_DIR"})


def known_variables() -> set[str]:
    """Every environment variable the settings read, provider variables included."""
    names = set(NOT_SETTINGS)
    for name in Settings.model_fields:
        names.update(setting_variables(name))
    return names


def unknown_variables() -> list[tuple[str, str | None]]:
    """`PIDELTA_*` variables of the environment that no setting reads, each with the
    closest known name (a misspelled variable is otherwise ignored without a word)."""
    known = sorted(n for n in known_variables() if n.startswith("PIDELTA_"))
    found = []
    for name in sorted(os.environ):
        if name.startswith("PIDELTA_") and name.upper() not in known:
            close = difflib.get_close_matches(name.upper(), known, n=1, cutoff=0.6)
            found.append((name, close[0] if close else None))
    return found


# Help of the settings declared above without a description (`pidelta --help`); a test
# checks that every setting has one or the other.
HELP: dict[str, str] = {
    "pi_url": "PI Web API base URL",
    "pi_auth": "none, basic, bearer, oidc (client credentials, refreshed) or kerberos",
    "pi_username": "user name (basic; kerberos without a keytab)",
    "pi_password": "password (basic; kerberos without a keytab); never printed or logged",
    "pi_token": "bearer token (bearer); never printed or logged",
    "pi_client_id": "OIDC client id (oidc)",
    "pi_client_secret": "OIDC client secret (oidc); never printed or logged",
    "pi_token_url": "OIDC token endpoint (oidc), https://",
    "pi_verify_tls": "verify the PI Web API's TLS certificate",
    "pi_ca_bundle": "CA file (PEM) that signs the PI Web API's certificate",
    "pi_max_concurrency": "PI requests in flight at once",
    "pi_max_requests_per_second": "PI requests started per second at most",
    "pi_request_timeout": "seconds one PI request may take",
    "pi_max_attempts": "attempts of one PI request before it fails",
    "pi_max_retry_seconds": "seconds one PI request may spend retrying",
    "pi_max_url_bytes": "longest URL sent to PI (WebID lists are split below it)",
    "pi_max_items_per_call": "values one PI call may return (the server's MaxReturnedItemsPerCall)",
    "target": "where tables live: a folder, s3://, az://, gs://, file:// or uc://catalog.schema",
    "shard_index": "the consistent-hash shard this worker owns, from 0",
    "shard_count": "number of shards",
    "tag_filter": "PI point name filter for discovery (`*`, `?`)",
    "start": "where a tag with no checkpoint starts: ISO 8601 (a time without a zone is UTC) "
    "or PI time (*-1h)",
    "safety_lag": "seconds behind now where a read ends (values there are all recorded)",
    "poll_interval": "seconds between polls in `pidelta run`",
    "rediscover_interval": "seconds between discoveries in `pidelta run`",
    "commit_max_rows": "rows buffered before a commit",
    "commit_max_bytes": "bytes buffered before a commit",
    "commit_max_age": "seconds a live value waits in the buffer after it could first be read "
    "(a catch-up after a restart or reshard commits as soon as it is read)",
    "max_commit_retries": "attempts of one Delta commit that meets concurrent commits",
    "metrics_port": "port of /metrics, /healthz and /readyz (0: any free port)",
    "log_format": "text or json",
    "log_level": "DEBUG, INFO, WARNING or ERROR; tracebacks only at DEBUG",
}


def setting_help(name: str) -> str:
    """The help text of a setting: its description, else its entry in HELP."""
    return Settings.model_fields[name].description or HELP.get(name, "")


def setting_variables(name: str) -> list[str]:
    """The environment variables of a setting, its PIDELTA_ name first."""
    alias = Settings.model_fields[name].validation_alias
    if isinstance(alias, AliasChoices):
        return [str(choice) for choice in alias.choices]
    return [alias if isinstance(alias, str) else f"PIDELTA_{name.upper()}"]
