"""The installed version of pidelta (`pidelta --version`, the build-info metric)."""

from __future__ import annotations

from importlib.metadata import PackageNotFoundError, version


def package_version() -> str:
    try:
        return version("pidelta")
    except PackageNotFoundError:
        return "0.0.0"
