"""Fixtures of the reliability suite: real engines on the session's small exported bundle, real servers.

Every test here has a SHORT form that the plain test run (`bash scripts/test.sh`) includes, and some have a
LONG form marked `long`, which runs only when asked for: `pytest -m long tests/reliability` (durations from
LATCOMP_SOAK_S, LATCOMP_FUZZ_EXAMPLES, LATCOMP_FUZZ_RUNS; see docs/RELIABILITY.md).
"""

from __future__ import annotations

import pytest


def pytest_collection_modifyitems(config, items):
    # The long forms are deselected unless the -m expression names them, so that `pytest -m "not slow"`
    # (or any other expression) does not start a soak of several minutes.
    if "long" in (config.option.markexpr or ""):
        return
    kept = [item for item in items if item.get_closest_marker("long") is None]
    if len(kept) != len(items):
        config.hook.pytest_deselected(items=[item for item in items if item.get_closest_marker("long")])
        items[:] = kept


@pytest.fixture(scope="module")
def engine(small_bundle):
    from latcomp.runtime import open_bundle

    with open_bundle(small_bundle, backend="ort") as engine:
        yield engine
