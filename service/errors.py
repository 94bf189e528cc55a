"""Typed errors shared by every layer; none of them ever carries a credential."""


class PideltaError(Exception):
    """Base of every error pidelta raises on purpose."""


class ConfigError(PideltaError):
    """Bad configuration or arguments: reported as one line, exit code 2."""
