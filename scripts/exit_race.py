"""How often a process that scanned a Delta table aborts as it ends (`service.cli.console`).

Builds a small table (EXIT_RACE_FILES appends), then starts EXIT_RACE_RUNS (100) processes
of each kind. Each scans the table with pyarrow from a worker thread, as the pipeline does,
and ends either by finalizing the interpreter (`sys.exit`) or by `end_process`. Prints the
exit codes seen; an abort is -6 ("terminate called without an active exception").
Figures are printed, never asserted.
"""

from __future__ import annotations

import collections
import os
import subprocess
import sys
import tempfile
from pathlib import Path

import pyarrow as pa
from deltalake import write_deltalake

ROOT = Path(__file__).resolve().parents[1]

_CHILD = """
import asyncio, sys
import pyarrow.dataset as ds
from deltalake import DeltaTable

def scan() -> int:
    dataset = DeltaTable(sys.argv[1]).to_pyarrow_dataset()
    return dataset.to_table(filter=ds.field("value") >= 0).num_rows

asyncio.run(asyncio.to_thread(scan))
if sys.argv[2] == "end_process":
    from service.cli import end_process
    end_process(0)
sys.exit(0)
"""


def main() -> None:
    runs = int(os.environ.get("EXIT_RACE_RUNS", "100"))
    files = int(os.environ.get("EXIT_RACE_FILES", "50"))
    with tempfile.TemporaryDirectory() as folder:
        table = str(Path(folder) / "t")
        for part in range(files):
            rows = pa.table({"part": [part] * 2000, "value": [float(i) for i in range(2000)]})
            write_deltalake(table, rows, mode="append")
        env = {**os.environ, "PYTHONPATH": str(ROOT)}
        for way in ("sys.exit", "end_process"):
            codes = collections.Counter(
                subprocess.run(
                    [sys.executable, "-c", _CHILD, table, way],
                    env=env,
                    capture_output=True,
                    check=False,
                ).returncode
                for _ in range(runs)
            )
            seen = ", ".join(f"{code}: {n}" for code, n in sorted(codes.items()))
            print(f"{way:12} {runs} runs over {files} files, exit codes {seen}")


if __name__ == "__main__":
    main()
