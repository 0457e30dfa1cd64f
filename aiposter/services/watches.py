"""Watches: a folder, an interval, a prompt template, and the targets its posts go to."""

from __future__ import annotations

import os
from dataclasses import dataclass, fields
from pathlib import Path

from sqlmodel import Session, select

from aiposter import captioners, publishers, sources
from aiposter.captioners.template import check_template
from aiposter.config import Config
from aiposter.core.models import Connection, User, Watch, WatchTarget, utcnow
from aiposter.images import remove_media
from aiposter.services import Invalid, get_owned

PLATFORM_PROVIDER = {"facebook": "facebook", "instagram": "instagram", "threads": "threads"}
# Polling a local folder is cheap; a Drive poll spends the user's API quota.
MIN_INTERVAL = {"local": 1, "google_drive": 30}
MAX_ROW_ID = 2**31 - 1  # row ids are 32-bit integers on PostgreSQL


@dataclass
class WatchSpec:
    """The editable fields of a watch; None on update means "leave unchanged"."""

    folder: str | None = None
    name: str | None = None
    source: str | None = None
    source_connection_id: int | None = None
    interval_seconds: int | None = None
    targets: list[str] | None = None  # "outbox", "instagram:<connection id>", ...
    prompt_template: str | None = None
    captioner: str | None = None
    backfill: bool | None = None
    maximum_age_hours: float | None = None
    min_spacing_seconds: int | None = None
    enabled: bool | None = None


def parse_target(s: Session, user: User, text: str) -> tuple[str, int | None]:
    platform, _, conn = text.strip().partition(":")
    if platform not in publishers.PLATFORMS:
        raise Invalid(f"unknown target platform {platform!r} (known: {', '.join(publishers.PLATFORMS)})",
                      field="targets")
    if platform not in publishers.NEEDS_CONNECTION:
        return platform, None
    if not (conn.isascii() and conn.isdigit()):
        raise Invalid(f"target {text!r} needs a connection id: {platform}:<connection id>", field="targets")
    c = s.get(Connection, int(conn)) if 1 <= int(conn) <= MAX_ROW_ID else None
    if c is None or c.user_id != user.id or c.provider != PLATFORM_PROVIDER[platform]:
        raise Invalid(f"no {platform} connection {conn} on this account", field="targets")
    return platform, c.id


def _validate(s: Session, cfg: Config, user: User, spec: WatchSpec, watch: Watch | None,
              allow_any_folder: bool) -> None:
    source = spec.source or (watch.source if watch else "local")
    if source not in sources.SOURCES:
        raise Invalid(f"unknown source {source!r} (known: {', '.join(sources.SOURCES)})", field="source")
    interval = spec.interval_seconds if spec.interval_seconds is not None else (
        watch.interval_seconds if watch else cfg.watch_defaults.interval_seconds)
    if interval < MIN_INTERVAL[source]:
        raise Invalid(f"interval_seconds must be at least {MIN_INTERVAL[source]} for a {source} watch",
                      field="interval_seconds")
    if spec.maximum_age_hours is not None and spec.maximum_age_hours < 0:
        raise Invalid("maximum_age_hours must be 0 (no limit) or more", field="maximum_age_hours")
    if spec.min_spacing_seconds is not None and spec.min_spacing_seconds < 0:
        raise Invalid("min_spacing_seconds must be 0 or more", field="min_spacing_seconds")
    if spec.captioner is not None and spec.captioner not in ("",) + captioners.CAPTIONERS:
        raise Invalid(f"unknown captioner {spec.captioner!r} (known: {', '.join(captioners.CAPTIONERS)})",
                      field="captioner")
    if spec.captioner:
        problem = captioners.check(spec.captioner, cfg)
        if problem:
            raise Invalid(f"captioner {spec.captioner} is not set up on this server: {problem}", field="captioner")
    if spec.prompt_template:
        err = check_template(spec.prompt_template)
        if err:
            raise Invalid(f"prompt_template has a syntax error: {err}", field="prompt_template")
    if spec.folder is not None:
        if not spec.folder.strip():
            raise Invalid("folder must not be empty", field="folder")
        if source == "local":
            spec.folder = str(local_folder(spec.folder, None if allow_any_folder else cfg.sources.local_roots))
    if source == "local" and spec.source_connection_id is not None:
        raise Invalid("a local watch has no source connection (only google_drive watches do)",
                      field="source_connection_id")
    if source == "google_drive":
        # Another user's connection and a missing one get the same answer: ids are not an oracle.
        cid = spec.source_connection_id or (watch.source_connection_id if watch else None)
        c = s.get(Connection, cid) if cid else None
        if c is None or c.user_id != user.id or c.provider != "google_drive":
            raise Invalid("a google_drive watch needs one of your google_drive connections",
                          field="source_connection_id")


OUTSIDE_ROOTS = "local folders are limited to the operator's sources.local_roots"


def local_folder(text: str, roots: list[str] | None) -> Path:
    """The resolved local folder, or Invalid. ``roots=None``: any folder (an admin on the CLI).

    Outside the roots every path gets the same answer, whether it exists, is unreadable (``/proc/1/root``),
    too long or a symlink out of a root, so the API is no oracle on the host's file system. The check is
    lexical first (before touching the path), then again on the resolved path (a symlink inside a root that
    points out of it)."""
    try:
        path = Path(text).expanduser()
        if roots is not None:
            root_paths = [Path(r).expanduser().resolve() for r in roots]
            lexical = Path(os.path.normpath(Path.cwd() / path))
            if not any(lexical.is_relative_to(r) for r in root_paths):
                raise Invalid(OUTSIDE_ROOTS, field="folder")
        folder = path.resolve()
        if roots is not None and not any(folder.is_relative_to(r) for r in root_paths):
            raise Invalid(OUTSIDE_ROOTS, field="folder")
        is_dir = folder.is_dir()
    except (OSError, RuntimeError, ValueError) as exc:  # too long, a loop, no such ~user, no permission
        if roots is not None:
            raise Invalid(OUTSIDE_ROOTS if not _under(text, roots) else "folder is not a usable directory",
                          field="folder") from None
        raise Invalid(f"folder {text[:200]!r} is not usable: {exc}", field="folder") from None
    if not is_dir:
        raise Invalid(f"folder {str(folder)[:500]} does not exist or is not a directory", field="folder")
    return folder


def _under(text: str, roots: list[str]) -> bool:
    """Lexically under a root (for error messages only: a path that cannot be resolved at all)."""
    try:
        lexical = Path(os.path.normpath(Path.cwd() / Path(text).expanduser()))
        return any(lexical.is_relative_to(Path(r).expanduser().resolve()) for r in roots)
    except (OSError, RuntimeError, ValueError):
        return False


def _apply(s: Session, user: User, watch: Watch, spec: WatchSpec) -> None:
    for f in fields(spec):
        value = getattr(spec, f.name)
        if value is None or f.name == "targets":
            continue
        if f.name == "folder" and (spec.source or watch.source) == "local":
            watch.folder_name = Path(value).name  # already resolved by _validate
        if f.name == "captioner" and value == "":
            value = None
        setattr(watch, f.name, value)
    if spec.targets is not None:
        parsed = [parse_target(s, user, t) for t in spec.targets]
        if not parsed:
            raise Invalid("a watch needs at least one target", field="targets")
        for old in s.exec(select(WatchTarget).where(WatchTarget.watch_id == watch.id)):
            s.delete(old)
        s.flush()
        for platform, conn in dict.fromkeys(parsed):
            s.add(WatchTarget(watch_id=watch.id, platform=platform, connection_id=conn))
    watch.updated_at = utcnow()


def create_watch(s: Session, cfg: Config, user: User, spec: WatchSpec, allow_any_folder: bool = False) -> Watch:
    if not spec.folder:
        raise Invalid("folder is required", field="folder")
    _validate(s, cfg, user, spec, None, allow_any_folder)
    d = cfg.watch_defaults
    watch = Watch(user_id=user.id, folder=spec.folder, interval_seconds=d.interval_seconds,
                  min_spacing_seconds=d.min_spacing_seconds, maximum_age_hours=d.maximum_age_hours)
    s.add(watch)
    s.flush()
    if spec.targets is None:
        spec.targets = ["outbox"]
    _apply(s, user, watch, spec)
    if not watch.name:
        watch.name = watch.folder_name or f"watch {watch.id}"
    s.flush()
    return watch


def update_watch(s: Session, cfg: Config, user: User, watch: Watch, spec: WatchSpec,
                 allow_any_folder: bool = False) -> Watch:
    _validate(s, cfg, user, spec, watch, allow_any_folder)
    folder_changed = spec.folder is not None and spec.folder != watch.folder
    _apply(s, user, watch, spec)
    if folder_changed:
        # A new folder gets a new baseline, like a new watch.
        watch.baseline_done = False
        watch.cursor = None
    if spec.interval_seconds is not None or spec.enabled:
        watch.next_poll_at = utcnow()
    return watch


def get_watch(s: Session, watch_id: int, user: User | None = None) -> Watch:
    return get_owned(s, Watch, watch_id, user, "watch")


def list_watches(s: Session, user: User | None = None) -> list[Watch]:
    q = select(Watch).order_by(Watch.id)
    if user is not None:
        q = q.where(Watch.user_id == user.id)
    return list(s.exec(q))


def targets_by_watch(s: Session, watch_ids: list[int]) -> dict[int, list[str]]:
    """Each watch's targets as "platform" or "platform:connection", in one query for many watches."""
    out: dict[int, list[str]] = {wid: [] for wid in watch_ids}
    q = select(WatchTarget).where(WatchTarget.watch_id.in_(watch_ids)).order_by(WatchTarget.id)
    for t in s.exec(q):
        out[t.watch_id].append(t.platform if t.connection_id is None else f"{t.platform}:{t.connection_id}")
    return out


def delete_watch(s: Session, watch: Watch, media_dir: Path) -> None:
    from aiposter.core.models import Post

    for pid in s.exec(select(Post.id).where(Post.watch_id == watch.id)):
        remove_media(media_dir, pid)
    s.delete(watch)
    s.flush()


def poll_now(s: Session, watch: Watch) -> Watch:
    watch.next_poll_at = utcnow()
    return watch


def watch_dicts(s: Session, ws: list[Watch]) -> list[dict]:
    targets = targets_by_watch(s, [w.id for w in ws])
    return [watch_dict(s, w, targets[w.id]) for w in ws]


def watch_dict(s: Session, w: Watch, targets: list[str] | None = None) -> dict:
    if targets is None:
        targets = targets_by_watch(s, [w.id])[w.id]
    return {
        "id": w.id, "user_id": w.user_id, "name": w.name, "source": w.source,
        "source_connection_id": w.source_connection_id, "folder": w.folder, "folder_name": w.folder_name,
        "interval_seconds": w.interval_seconds, "targets": targets,
        "prompt_template": w.prompt_template, "captioner": w.captioner, "backfill": w.backfill,
        "maximum_age_hours": w.maximum_age_hours, "min_spacing_seconds": w.min_spacing_seconds,
        "enabled": w.enabled, "baseline_done": w.baseline_done,
        "last_poll_at": _iso(w.last_poll_at), "last_poll_error": w.last_poll_error,
        "next_poll_at": _iso(w.next_poll_at), "created_at": _iso(w.created_at),
    }


def _iso(dt) -> str | None:
    return dt.isoformat(timespec="seconds") if dt else None
