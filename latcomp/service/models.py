"""The models a server answers for: name -> the loaded engine and its batcher, swapped without dropping work.

    models = ModelSet([Model("faces64", engine, make_batcher(engine), owned=False)])
    with models.get("faces64").hold() as model:     # "" = the default model
        image, latent, timing = await model.batcher.run(image, mask)

    repository = ModelRepository("models/", models, open_engine, make_batcher, max_models=8)
    await repository.load()                         # at start: every bundle under models/, warmed up
    await repository.reload()                       # on SIGHUP: add, replace and remove what changed

A request holds the model it was admitted to (`hold`) until it is answered. Replacing a model puts the
new one in place only after it is loaded and warmed up (so requests never wait on a cold engine); the old
one stops taking leases, and its batcher and engine close when its last lease is returned. Queued and
running requests therefore finish on the engine that admitted them, and nothing fails during a swap.

Repository layout: every directory DIR/<name>/ holding a bundle (latcomp.json) is the model <name>,
version the bundle's manifest version. Names starting with "." are ignored, so a new bundle can be staged
as DIR/.incoming and renamed into place (a rename is atomic; a copy in progress would fail its checksums
and be retried at the next reload). A bundle that fails to load at a reload is logged and the model keeps
its previous version.
"""

from __future__ import annotations

import asyncio
import logging
import re
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from ..runtime.batcher import Batcher
from ..runtime.bundle import MANIFEST
from .admission import echo

log = logging.getLogger("latcomp.service")

NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,127}$")


class ModelNotFound(LookupError):
    """No model of that name (or version) is served (the service answers NOT_FOUND)."""


class RepositoryError(ValueError):
    """A model repository that cannot be served as configured (bad directory, too many models)."""


@dataclass(eq=False)
class Model:
    """One loaded model: its engine, its batcher and the requests holding it."""

    name: str
    engine: Any
    batcher: Batcher
    owned: bool = True  # close the engine when the model is retired (False: the caller's engine)
    fingerprint: tuple = ()  # what the repository saw on disk when it loaded this model
    users: int = 0  # leases held: requests admitted and not yet answered
    retired: bool = False
    _idle: asyncio.Event | None = field(default=None, repr=False)

    @property
    def version(self) -> str:
        return str(self.engine.version)

    async def warm_up(self) -> None:
        """One dummy engine call per instance, at once (allocations, kernel selection), off the event loop."""
        resolution = self.engine.resolution
        image = np.zeros((1, resolution, resolution, 3), np.uint8)
        mask = np.zeros((1, resolution, resolution, 1), np.uint8)
        started = time.monotonic()
        loop = asyncio.get_running_loop()
        await asyncio.gather(*(loop.run_in_executor(None, self.engine.run, image, mask)
                               for _ in range(self.batcher.threads)))
        log.info("%s %s warmed up in %.0f ms", self.name, self.version, (time.monotonic() - started) * 1000)

    async def retire(self, grace_s: float) -> None:
        """Takes no new leases; once the last one is returned (or grace_s passed), closes the batcher and,
        if owned, the engine."""
        self.retired = True
        if self.users:
            self._idle = asyncio.Event()
            try:
                await asyncio.wait_for(self._idle.wait(), grace_s)
            except asyncio.TimeoutError:
                log.error("%s %s: %d requests still running after %.0f s; closing it anyway",
                          self.name, self.version, self.users, grace_s)
        await self.batcher.close(grace_s)
        if self.owned and not self.batcher.inflight:  # a hung engine call keeps its engine
            await asyncio.get_running_loop().run_in_executor(None, self.engine.close)

    @contextmanager
    def hold(self) -> Iterator[Model]:
        """Keeps the model open (a reload does not close it) until the block ends: one request's lease."""
        self.users += 1
        try:
            yield self
        finally:
            self.users -= 1
            if self.users == 0 and self._idle is not None:
                self._idle.set()


class ModelSet:
    """The served models by name; `default` answers requests that name none."""

    def __init__(self, models: list[Model] = (), default: str | None = None):
        self._models: dict[str, Model] = {}
        self.default_name = default
        for model in models:
            self.put(model)

    def __iter__(self) -> Iterator[Model]:
        return iter(list(self._models.values()))

    def __len__(self) -> int:
        return len(self._models)

    def names(self) -> list[str]:
        return sorted(self._models)

    @property
    def default(self) -> Model | None:
        """The configured default model, else the first by name (None when nothing is loaded)."""
        if self.default_name in self._models:
            return self._models[self.default_name]
        names = self.names()
        return self._models[names[0]] if names else None

    def loaded(self, name: str) -> Model | None:
        """The model served under exactly this name, if any (no default)."""
        return self._models.get(name)

    def get(self, name: str = "", version: str = "") -> Model:
        model = self._models.get(name) if name else self.default
        if model is None:
            served = ", ".join(repr(n) for n in self.names()) or "none"
            raise ModelNotFound(f"unknown model {echo(name)}; this server serves {served}")
        if version and version != model.version:
            raise ModelNotFound(f"model {model.name!r} is at version {model.version!r}, not {echo(version)}")
        return model

    def put(self, model: Model) -> Model | None:
        """Serves `model` under its name from now on; returns the model it replaces (to be retired)."""
        previous = self._models.get(model.name)
        self._models[model.name] = model
        return previous

    def pop(self, name: str) -> Model | None:
        return self._models.pop(name, None)

    @property
    def queue_depth(self) -> int:
        return sum(model.batcher.queue_depth for model in self)

    @property
    def inflight(self) -> int:
        return sum(model.batcher.inflight for model in self)


def _fingerprint(bundle_dir: Path) -> tuple:
    """Changes whenever the bundle directory is replaced or its manifest rewritten."""
    stat = (bundle_dir / MANIFEST).stat()
    return (str(bundle_dir.resolve()), stat.st_ino, stat.st_size, stat.st_mtime_ns)


class ModelRepository:
    """A directory of bundles served as models, reloaded on demand (see the module docstring)."""

    def __init__(
        self,
        root: str | Path,
        models: ModelSet,
        open_engine: Callable[[Path], Any],
        make_batcher: Callable[[Any], Batcher],
        max_models: int = 8,
        grace_s: float = 30.0,
    ):
        self.root = Path(root)
        self.models = models
        self.open_engine = open_engine  # blocking: runs in a worker thread
        self.make_batcher = make_batcher
        self.max_models = int(max_models)
        self.grace_s = grace_s
        self._lock = asyncio.Lock()  # one reload at a time
        self._retiring: set[asyncio.Task] = set()

    def scan(self) -> dict[str, Path]:
        """name -> bundle directory, for every DIR/<name>/latcomp.json."""
        if not self.root.is_dir():
            raise RepositoryError(f"{self.root}: the model repository is not a directory")
        found = {}
        for entry in sorted(self.root.iterdir()):
            if entry.name.startswith(".") or not entry.is_dir():
                continue
            if not NAME.match(entry.name):
                log.warning("%s: skipped: a model name is letters, digits, '_', '.', '-'", entry)
            elif (entry / MANIFEST).is_file():
                found[entry.name] = entry
            else:
                log.warning("%s: skipped: no %s (not a bundle)", entry, MANIFEST)
        return found

    async def load(self) -> None:
        """Loads every bundle (at start): any failure is a RepositoryError naming the bundle."""
        found = self.scan()
        if not found:
            raise RepositoryError(f"{self.root}: no bundles (expected {self.root}/<name>/{MANIFEST})")
        if len(found) > self.max_models:
            raise RepositoryError(f"{self.root} holds {len(found)} models, more than --max-models "
                                  f"{self.max_models}: raise the limit or remove some")
        for name, path in found.items():
            try:
                await self._install(name, path)
            except Exception as error:  # noqa: BLE001 - reported with the bundle's path
                raise RepositoryError(f"model {name!r} ({path}): {error}") from error

    async def reload(self) -> dict[str, list[str]]:
        """Adds new bundles, replaces changed ones, removes vanished ones; returns what happened."""
        async with self._lock:
            outcome: dict[str, list[str]] = {"added": [], "replaced": [], "removed": [], "failed": []}
            try:
                found = self.scan()
            except RepositoryError as error:
                log.error("reload: %s; nothing changed", error)
                outcome["failed"].append(str(self.root))
                return outcome
            for model in self.models:
                if model.name not in found:
                    self._retire(self.models.pop(model.name))
                    outcome["removed"].append(model.name)
            for name, path in found.items():
                current = self.models.loaded(name)
                try:
                    if current is not None and current.fingerprint == _fingerprint(path):
                        continue
                    if current is None and len(self.models) >= self.max_models:
                        raise RepositoryError(f"--max-models {self.max_models} models are loaded already")
                    await self._install(name, path)
                except Exception as error:  # noqa: BLE001 - one bad bundle must not stop the others
                    log.error("reload: model %r (%s) not loaded: %s", name, path, error)
                    outcome["failed"].append(name)
                    continue
                outcome["replaced" if current is not None else "added"].append(name)
            log.info("reload of %s: %s", self.root,
                     ", ".join(f"{key} {names}" for key, names in outcome.items() if names) or "no change")
            return outcome

    async def _install(self, name: str, path: Path) -> None:
        """Opens and warms up the bundle, then serves it under `name` and retires what it replaces."""
        fingerprint = _fingerprint(path)
        engine = await asyncio.get_running_loop().run_in_executor(None, self.open_engine, path)
        model = Model(name, engine, self.make_batcher(engine), owned=True, fingerprint=fingerprint)
        try:
            await model.warm_up()
        except BaseException:
            await model.retire(0.0)
            raise
        previous = self.models.put(model)
        log.info("serving model %r version %s from %s", name, model.version, path)
        if previous is not None:
            self._retire(previous)

    def _retire(self, model: Model) -> None:
        task = asyncio.get_running_loop().create_task(model.retire(self.grace_s))
        self._retiring.add(task)
        task.add_done_callback(self._retiring.discard)

    async def close(self) -> None:
        """Waits for the models being retired (the caller closes the served ones)."""
        if self._retiring:
            await asyncio.gather(*self._retiring, return_exceptions=True)
