"""Shared test fixtures: the conformance vectors (tests/data/conformance, a byte-identical copy of the team's
../shared/conformance; tests/test_conformance_data.py checks it), a small bundle, torch at one thread."""

from __future__ import annotations

import importlib.util
import json
import threading
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pytest

REPO = Path(__file__).resolve().parents[1]
CONFORMANCE = REPO / "tests" / "data" / "conformance"


@dataclass
class ConformanceSet:
    """One folder of conformance vectors: manifest, rebuilt weights, inputs and expected outputs."""

    name: str
    manifest: dict
    weights: dict[str, np.ndarray]
    inputs: dict[str, np.ndarray]
    expected: dict[str, np.ndarray]

    def state_dict(self):
        import torch

        return {key: torch.from_numpy(array) for key, array in self.weights.items()}


def _make_weights_module():
    spec = importlib.util.spec_from_file_location("conformance_make_weights", CONFORMANCE / "make_weights.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def load_conformance(name: str) -> ConformanceSet:
    folder = CONFORMANCE / name
    manifest = json.loads((folder / "manifest.json").read_text())
    weights = _make_weights_module().make_weights(manifest) if "state_dict" in manifest else {}
    with np.load(folder / "inputs.npz") as inputs, np.load(folder / "expected.npz") as expected:
        return ConformanceSet(name, manifest, weights, dict(inputs), dict(expected))


def assert_close_f64(ours, reference, rtol: float = 1e-4, atol: float = 1e-4) -> float:
    """The conformance README float32 check |ours - X_f64| <= 1e-4 + 1e-4*|X_f64|; returns max abs error."""
    ours = np.asarray(ours, dtype=np.float64)
    assert ours.shape == reference.shape, f"shape {ours.shape} != reference {reference.shape}"
    error = np.abs(ours - reference)
    bound = atol + rtol * np.abs(reference)
    worst = float(error.max())
    assert np.all(error <= bound), f"max abs error {worst:.3g} exceeds 1e-4 + 1e-4*|ref|"
    return worst


@pytest.fixture(scope="session")
def conformance():
    """Returns the loader so each test picks its set; cached per name for the session."""
    cache: dict[str, ConformanceSet] = {}

    def get(name: str) -> ConformanceSet:
        if name not in cache:
            cache[name] = load_conformance(name)
        return cache[name]

    return get


@pytest.fixture(scope="session")
def small_bundle(tmp_path_factory) -> Path:
    """One small, real exported StyleGAN2 bundle shared by the whole session: read it, never modify it
    (copy it first, e.g. with shutil.copytree, to tamper with it)."""
    from bundle_fixtures import make_small_bundle

    return make_small_bundle(tmp_path_factory.mktemp("shared-bundle"))


class GatedEngine:
    """A real engine whose calls can be held at a gate: `gate = engine.hold()` makes every following run,
    generate or sample wait (inside the batcher's engine threads, as a slow engine would) until
    `gate.set()`. Tests use it to fix the order of events instead of relying on timing; everything else is
    the wrapped engine's."""

    def __init__(self, engine):
        self.engine = engine
        self._gate: threading.Event | None = None

    def hold(self) -> threading.Event:
        self._gate = threading.Event()
        return self._gate

    def _pass(self) -> None:
        gate = self._gate
        if gate is not None:
            assert gate.wait(60), "a held engine call was never released"

    def run(self, *args, **kwargs):
        self._pass()
        return self.engine.run(*args, **kwargs)

    def generate(self, *args, **kwargs):
        self._pass()
        return self.engine.generate(*args, **kwargs)

    def sample(self, *args, **kwargs):
        self._pass()
        return self.engine.sample(*args, **kwargs)

    def __getattr__(self, name):
        return getattr(self.engine, name)


@pytest.fixture(scope="module")
def gated_engine(small_bundle):
    """Opens the small bundle's ort engine (keyword options of open_bundle) as a GatedEngine; all are closed
    when the module ends."""
    from latcomp.runtime import open_bundle

    opened = []

    def open_gated(**options) -> GatedEngine:
        opened.append(open_bundle(small_bundle, backend="ort", **options))
        return GatedEngine(opened[-1])

    yield open_gated
    for engine in opened:
        engine.close()


@pytest.fixture(scope="module")
def torch_one_thread():
    """torch at one intra-op thread for a module: on the shared 2-core test machine, two threads per op wait
    on each other and on other processes (measured several times slower on these small sizes)."""
    import torch

    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)
