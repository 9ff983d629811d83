"""The models this server runs, by name and version: loading, readiness and unloading."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Iterable
from dataclasses import dataclass
from enum import StrEnum

from infership.errors import (
    InfershipError,
    ModelNotFound,
    ModelNotReady,
    VersionNotFound,
)
from infership.loader import ModelLoader
from infership.model import ServedModel
from infership.repository.manifest import check_model_name
from infership.settings import ServerSettings

log = logging.getLogger(__name__)


class ModelState(StrEnum):
    LOADING = "LOADING"
    READY = "READY"
    UNAVAILABLE = "UNAVAILABLE"


@dataclass(slots=True)
class ModelStatus:
    name: str
    version: int | None
    state: ModelState
    reason: str = ""


class ModelRegistry:
    """Loads models from a repository and hands out ready versions to the data plane."""

    def __init__(self, loader: ModelLoader, settings: ServerSettings) -> None:
        self.repository = loader.repository
        self._loader = loader
        self._served: dict[str, dict[int, ServedModel]] = {}
        self._status: dict[str, list[ModelStatus]] = {}
        self._lock = asyncio.Lock()
        # Fixed at start-up, then changed only by load/unload: a folder appearing in the
        # repository later must not make a running server unready.
        self._expected: list[str] = list(settings.models) or self.repository.names()

    def names(self) -> list[str]:
        """Models this server means to serve: those configured, plus loaded, minus unloaded."""
        return list(self._expected)

    async def load(self, name: str) -> None:
        """Load (or reload) every selected version of ``name``, warm it, then swap it in.

        The new versions are ready before the old ones stop, and the old ones finish what they
        had queued; if loading fails, the old ones keep serving. Raises InvalidRequest (a name
        no model can have), ModelNotFound, ConfigError or ModelLoadError.
        """
        check_model_name(name)  # before any file system call: the name comes from the caller
        if not self.repository.exists(name):
            raise ModelNotFound(f"model {name!r} is not in the repository {self.repository.root}")
        async with self._lock:
            old = self._served.get(name, {})
            if not old:
                self._status[name] = [ModelStatus(name, None, ModelState.LOADING)]
            try:
                loaded = await self._load_versions(name)
            except Exception as exc:
                # Anything else is a bug, logged where it is answered; the state must not stay
                # LOADING for ever because of it.
                reason = str(exc) if isinstance(exc, InfershipError) else "internal error"
                if old:  # the versions already serving keep serving; say why the reload failed
                    for status in self._status[name]:
                        status.reason = f"reload failed: {reason}"
                else:
                    self._status[name] = [ModelStatus(name, None, ModelState.UNAVAILABLE, reason)]
                raise
            self._served[name] = {m.version: m for m in loaded}
            self._status[name] = [ModelStatus(name, m.version, ModelState.READY) for m in loaded]
            if name not in self._expected:
                self._expected.append(name)
            for model in loaded:
                model.metrics.ready.set(1)
        await self._retire(old.values())

    async def unload(self, name: str) -> None:
        """Stop serving ``name`` after its queued requests finish. Raises InvalidRequest or
        ModelNotFound."""
        check_model_name(name)
        async with self._lock:
            if name not in self._served and name not in self._status:
                raise ModelNotFound(f"model {name!r} is not loaded")
            old = self._served.pop(name, {})
            if name in self._expected:
                self._expected.remove(name)
            self._status[name] = [
                ModelStatus(name, v, ModelState.UNAVAILABLE, "unloaded") for v in sorted(old)
            ] or [ModelStatus(name, None, ModelState.UNAVAILABLE, "unloaded")]
        await self._retire(old.values())

    async def stop(self) -> None:
        """Drain and stop every model."""
        for name in list(self._served):
            await self._retire(self._served.pop(name).values())

    def get(self, name: str, version: str | None = None) -> ServedModel:
        """The served version (newest when ``version`` is None). Raises for unknown or unready."""
        versions = self._served.get(name)
        if not versions:
            statuses = self._status.get(name)
            if statuses is None:
                raise ModelNotFound(
                    f"unknown model {name!r}; served models: {sorted(self._served)}"
                )
            status = statuses[0]
            detail = f": {status.reason}" if status.reason else ""
            raise ModelNotReady(f"model {name!r} is {status.state.lower()}{detail}")
        if version is None or version == "":
            return versions[max(versions)]
        number = (
            int(version) if version.isascii() and version.isdigit() and len(version) < 19 else 0
        )
        if number not in versions:
            shown = version if len(version) <= 20 else version[:20] + "..."
            raise VersionNotFound(
                f"model {name!r} has no version {shown!r}; served versions: {sorted(versions)}"
            )
        return versions[number]

    def versions(self, name: str) -> list[int]:
        return sorted(self._served.get(name, {}))

    @property
    def ready(self) -> bool:
        """True when every model it means to serve has a version serving (and there is one)."""
        # A server left with no model at all should not receive traffic.
        return bool(self._expected) and all(self._served.get(n) for n in self._expected)

    def index(self) -> list[ModelStatus]:
        listed = [s for statuses in self._status.values() for s in statuses]
        known = set(self._status)
        listed += [
            ModelStatus(n, None, ModelState.UNAVAILABLE, "not loaded")
            for n in self.repository.names()
            if n not in known
        ]
        return sorted(listed, key=lambda s: (s.name, s.version or 0))

    async def _load_versions(self, name: str) -> list[ServedModel]:
        loop = asyncio.get_running_loop()
        source = await loop.run_in_executor(None, self._loader.prepare, name)
        models = []
        try:
            for version in source.versions:
                model = await loop.run_in_executor(None, self._loader.build, source, version)
                models.append(model)
                await model.start()
        except BaseException:
            for model in models:
                await model.stop(drain=False)
            raise
        return models

    async def _retire(self, models: Iterable[ServedModel]) -> None:
        for model in list(models):
            if model.version not in self._served.get(model.name, {}):
                model.metrics.ready.set(0)
            await model.stop(drain=True)
            log.info("stopped %s version %s", model.name, model.version)
