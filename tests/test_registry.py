"""The registry: one entry per integration, clear errors for unknown or not-yet-shipped ones, overrides
for tests, and adapters built once per worker thread from AdapterDeps (never the pipeline's context)."""

from __future__ import annotations

import threading

import pytest

from aiposter.config import Config
from aiposter.core import registry
from aiposter.core.registry import AdapterDeps, AdapterUnavailable, UnknownAdapter
from aiposter.db import session_scope
from aiposter.publishers.outbox import OutboxPublisher
from aiposter.services import Invalid, users, watches
from aiposter.sources.local import LocalSource


def test_every_integration_has_one_entry():
    assert registry.names(registry.SOURCE) == ("local", "google_drive")
    assert registry.names(registry.DESTINATION) == ("outbox", "facebook", "instagram", "threads")
    assert registry.source("google_drive").provider == "google_drive"
    assert registry.source("google_drive").min_interval_seconds == 30
    assert registry.destination("outbox").provider is None
    assert {registry.destination(n).provider for n in ("facebook", "instagram", "threads")} == \
        {"facebook", "instagram", "threads"}


@pytest.mark.parametrize("kind,name", [(registry.DESTINATION, "facebook"), (registry.DESTINATION, "instagram"),
                                       (registry.DESTINATION, "threads")])
def test_a_registered_integration_without_its_module_is_a_clear_error(kind, name, monkeypatch):
    monkeypatch.setitem(registry.DESTINATIONS, name, registry.DestinationEntry(
        name, f"aiposter.publishers.not_shipped_{name}", name))
    with pytest.raises(AdapterUnavailable, match=f"the {name} .* is not available in this version"):
        registry.build(kind, name, AdapterDeps(Config()))


def test_unknown_names_list_the_known_ones():
    with pytest.raises(UnknownAdapter, match=r"unknown target platform 'myspace' \(known: outbox, facebook"):
        registry.destination("myspace")


def test_an_override_adds_or_replaces_an_adapter_for_the_block_only():
    deps = AdapterDeps(Config())
    assert isinstance(registry.build(registry.DESTINATION, "outbox", deps), OutboxPublisher)
    marker = object()
    with registry.override(registry.DESTINATION, "outbox", lambda d: marker), \
            registry.override(registry.DESTINATION, "fake", lambda d: (marker, d)):
        assert registry.build(registry.DESTINATION, "outbox", deps) is marker
        assert registry.build(registry.DESTINATION, "fake", deps) == (marker, deps)
        assert "fake" in registry.names(registry.DESTINATION)
        assert registry.destination("fake").provider is None
    assert isinstance(registry.build(registry.DESTINATION, "outbox", deps), OutboxPublisher)
    with pytest.raises(UnknownAdapter):
        registry.destination("fake")


def test_adapters_are_built_per_worker_thread_from_deps(ctx):
    built: list[tuple[int, AdapterDeps]] = []

    def factory(deps):
        built.append((threading.get_ident(), deps))
        return LocalSource(deps.cfg)

    seen: dict[int, list] = {}
    together = threading.Barrier(3)  # all alive at once, so no thread id is reused

    def work():
        seen[threading.get_ident()] = [ctx.source("local"), ctx.source("local")]
        together.wait(timeout=10)

    with registry.override(registry.SOURCE, "local", factory):
        threads = [threading.Thread(target=work) for _ in range(3)]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
    assert len(built) == 3 and len({ident for ident, _ in built}) == 3
    assert all(a is b for a, b in seen.values())  # reused within a thread
    assert len({id(a) for a, _ in seen.values()}) == 3  # never shared between threads
    assert all(d is ctx.deps and d.media is ctx.media and d.cfg is ctx.cfg for _, d in built)


def test_watch_rules_come_from_the_registry(ctx, tmp_path):
    with session_scope(ctx.engine) as s:
        owner = users.create_user(s, "ann@example.com")
        with pytest.raises(Invalid, match="at least 30 for a google_drive watch"):
            watches.create_watch(s, ctx.cfg, owner, watches.WatchSpec(
                folder="1AbCdEf", source="google_drive", interval_seconds=5))
        with pytest.raises(Invalid, match="a google_drive watch needs one of your google_drive connections"):
            watches.create_watch(s, ctx.cfg, owner, watches.WatchSpec(folder="1AbCdEf", source="google_drive",
                                                                          interval_seconds=60))
        with pytest.raises(Invalid, match="needs a connection id: instagram:<connection id>"):
            watches.create_watch(s, ctx.cfg, owner, watches.WatchSpec(folder=str(tmp_path), targets=["instagram"]),
                                 allow_any_folder=True)
        with pytest.raises(Invalid, match="limited to this account's folders under the server's sources.local_roots"):
            watches.create_watch(s, ctx.cfg, owner, watches.WatchSpec(folder=str(tmp_path)))
        # A destination plugged in through the registry is a valid target at once.
        with registry.override(registry.DESTINATION, "scripted", lambda d: None):
            w = watches.create_watch(s, ctx.cfg, owner, watches.WatchSpec(folder=str(tmp_path),
                                                                          targets=["scripted"]),
                                     allow_any_folder=True)
            assert watches.watch_dict(s, w)["targets"] == ["scripted"]
            assert w.folder == str(tmp_path.resolve()) and w.folder_name == tmp_path.name


@pytest.mark.parametrize("name", ["facebook", "instagram", "threads"])
def test_the_meta_destinations_are_built_from_the_registry(name):
    """Shipped now (issue 10): each builds a MetaDestination; without a credential store it says why."""
    from aiposter.core.errors import StepError
    from aiposter.publishers.meta.wiring import MetaDestination

    cfg = Config.model_validate({"oauth": {"meta": {"app_secret": "s"}}})
    assert isinstance(registry.build(registry.DESTINATION, name, AdapterDeps(cfg, credentials=object())),
                      MetaDestination)
    with pytest.raises(StepError, match="no credential store"):
        registry.build(registry.DESTINATION, name, AdapterDeps(cfg))
