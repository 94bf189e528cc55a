"""The optional C reader of `/streamsets/recorded` bodies (`workers.timeseries._pijson`).

Optional twice over: without a C compiler the build goes on without it, and
`PIDELTA_PURE_WHEEL=1` leaves it out on purpose, for a wheel built on one machine and run
on another (the Databricks bundle builds on a laptop for the cluster). Without it,
msgspec and orjson read every body: the same rows, at about twice the CPU.
"""

import os

from setuptools import Extension, setup

native = os.environ.get("PIDELTA_PURE_WHEEL") != "1"
reader = Extension(
    "workers.timeseries._pijson",
    ["workers/timeseries/_pijson.c"],
    optional=True,
    # The stable ABI of 3.11 (the C file defines Py_LIMITED_API): one wheel, tagged abi3,
    # serves CPython 3.11, 3.12 and later alike (Databricks Runtime 15.4 LTS and 16).
    py_limited_api=True,
)
setup(
    ext_modules=[reader] if native else [],
    options={"bdist_wheel": {"py_limited_api": "cp311"}} if native else {},
)
