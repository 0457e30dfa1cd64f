"""One place per integration: every source, destination and captioner, and how to build it.

Adding a source or a destination is one module (exposing ``build(deps)``) plus one entry here: its name,
the OAuth provider whose connection it needs, and for sources the minimum polling interval and an
optional folder check (``validate_folder(cfg, user, folder, allow_any_folder) -> str`` in the same module,
returning the folder as stored, raising ValueError with a message for the user). The services
(watch validation, target parsing) and the pipeline read this table and nothing else.

Modules are imported only when an adapter is built, so an entry whose module has not landed yet
(``google_drive``, ``facebook``, ...) is known (watches can name it) but building it raises a clear
:class:`AdapterUnavailable` instead of an ImportError traceback.

Tests replace an adapter with :func:`override` (a context manager), never by poking a cache.
"""

from __future__ import annotations

import importlib
import threading
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from aiposter.core.errors import StepError

if TYPE_CHECKING:
    from aiposter.config import Config
    from aiposter.core.media import MediaStore, MediaUrls

SOURCE, DESTINATION, CAPTIONER = "source", "destination", "captioner"
KINDS = (SOURCE, DESTINATION, CAPTIONER)


@dataclass(frozen=True)
class AdapterDeps:
    """What an adapter may use. Never the pipeline's context."""

    cfg: Config
    credentials: Any = None  # a CredentialStore (aiposter.core.credentials) once it lands; None until then
    media: MediaStore | None = None
    media_urls: MediaUrls | None = None


@dataclass(frozen=True)
class SourceEntry:
    name: str
    module: str
    provider: str | None          # OAuth provider whose connection a watch needs (None: no connection)
    min_interval_seconds: int     # polling more often is refused (a Drive poll spends the user's quota)
    validate_folder: str | None = None  # name of the folder check in ``module``


@dataclass(frozen=True)
class DestinationEntry:
    name: str
    module: str
    provider: str | None          # OAuth provider of the connection a target needs (None: no connection)


@dataclass(frozen=True)
class CaptionerEntry:
    name: str
    module: str


SOURCES: dict[str, SourceEntry] = {e.name: e for e in (
    SourceEntry("local", "aiposter.sources.local", None, 1, validate_folder="validate_folder"),
    SourceEntry("google_drive", "aiposter.sources.google_drive", "google_drive", 30,
                validate_folder="validate_folder"),
)}

DESTINATIONS: dict[str, DestinationEntry] = {e.name: e for e in (
    DestinationEntry("outbox", "aiposter.publishers.outbox", None),
    DestinationEntry("facebook", "aiposter.publishers.facebook", "facebook"),
    DestinationEntry("instagram", "aiposter.publishers.instagram", "instagram"),
    DestinationEntry("threads", "aiposter.publishers.threads", "threads"),
)}

CAPTIONERS: dict[str, CaptionerEntry] = {e.name: e for e in (
    CaptionerEntry("template", "aiposter.captioners.template"),
    CaptionerEntry("openai", "aiposter.captioners.openai"),
    CaptionerEntry("gemini", "aiposter.captioners.gemini"),
    CaptionerEntry("anthropic", "aiposter.captioners.anthropic"),
    CaptionerEntry("openai_compatible", "aiposter.captioners.openai_compatible"),
)}

_TABLES: dict[str, dict] = {SOURCE: SOURCES, DESTINATION: DESTINATIONS, CAPTIONER: CAPTIONERS}
_LABEL = {SOURCE: "source", DESTINATION: "target platform", CAPTIONER: "captioner"}


class UnknownAdapter(ValueError):
    """No entry of that name."""


class AdapterUnavailable(StepError):
    """The entry exists but its module is not part of this version (or failed to import)."""

    def __init__(self, message: str):
        super().__init__(message, permanent=True, code="config")


# --------------------------------------------------------------------------- overrides (tests)

_overrides: dict[tuple[str, str], tuple[Any, Callable[[AdapterDeps], Any]]] = {}
_lock = threading.Lock()
_generation = 0


def generation() -> int:
    """Bumped by every override change: adapters built before it must be rebuilt."""
    return _generation


@contextmanager
def override(kind: str, name: str, factory: Callable[[AdapterDeps], Any],
             entry: Any = None) -> Iterator[None]:
    """Build ``kind``/``name`` with ``factory(deps)`` inside the block, in every thread of the process.
    A name without an entry (a test destination such as ``scripted``) is registered for the block, as a
    destination needing no connection unless ``entry`` says otherwise."""
    global _generation
    if kind not in KINDS:
        raise ValueError(f"unknown adapter kind {kind!r}")
    if entry is None and name not in _TABLES[kind]:
        entry = {SOURCE: lambda: SourceEntry(name, "", None, 1),
                 DESTINATION: lambda: DestinationEntry(name, "", None),
                 CAPTIONER: lambda: CaptionerEntry(name, "")}[kind]()
    with _lock:
        previous = _overrides.get((kind, name))
        _overrides[(kind, name)] = (entry, factory)
        _generation += 1
    try:
        yield
    finally:
        with _lock:
            if previous is None:
                _overrides.pop((kind, name), None)
            else:
                _overrides[(kind, name)] = previous
            _generation += 1


# --------------------------------------------------------------------------- lookups


def names(kind: str) -> tuple[str, ...]:
    extra = tuple(n for (k, n) in list(_overrides) if k == kind and n not in _TABLES[kind])
    return tuple(_TABLES[kind]) + extra


def entry(kind: str, name: str):
    found = _overrides.get((kind, name))
    if found is not None and found[0] is not None:
        return found[0]
    try:
        return _TABLES[kind][name]
    except KeyError:
        raise UnknownAdapter(f"unknown {_LABEL[kind]} {name!r} (known: {', '.join(names(kind))})") from None


def source(name: str) -> SourceEntry:
    return entry(SOURCE, name)


def destination(name: str) -> DestinationEntry:
    return entry(DESTINATION, name)


def _module(kind: str, name: str):
    e = entry(kind, name)
    try:
        return importlib.import_module(e.module)
    except ModuleNotFoundError as exc:
        if exc.name and e.module.startswith(exc.name):
            raise AdapterUnavailable(f"the {name} {_LABEL[kind]} is not available in this version of "
                                     f"ai-poster (no module {e.module})") from None
        raise AdapterUnavailable(f"the {name} {_LABEL[kind]} cannot be loaded: {exc}") from None


def build(kind: str, name: str, deps: AdapterDeps):
    """A new adapter. UnknownAdapter for a name without an entry; AdapterUnavailable when its module is
    missing; the adapter's own StepError when it cannot work with this config (e.g. no API key)."""
    found = _overrides.get((kind, name))
    if found is not None:
        return found[1](deps)
    return _module(kind, name).build(deps)


def validate_folder(name: str, cfg: Config, user, folder: str, allow_any_folder: bool) -> str:
    """Check a watch's folder with the source's own hook; returns it as it will be stored."""
    e = source(name)
    if not e.validate_folder:
        return folder
    return getattr(_module(SOURCE, name), e.validate_folder)(cfg, user, folder, allow_any_folder)
