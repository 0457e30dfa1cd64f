"""Watches: a folder, an interval, a prompt template, and the targets its posts go to."""

from __future__ import annotations

import functools
from dataclasses import dataclass, fields
from pathlib import Path

import sqlalchemy as sa
from sqlmodel import Session, select
from sqlmodel.sql.sqltypes import AutoString

from aiposter import captioners
from aiposter.captioners.template import check_template
from aiposter.config import Config
from aiposter.core import credentials, image_types, registry
from aiposter.core.media import MediaStore
from aiposter.core.models import Connection, User, Watch, WatchTarget, utcnow
from aiposter.services import Invalid, get_owned
from aiposter.sources.local import local_roots  # noqa: F401 - the rule every caller uses

FITS = ("pad", "crop")  # see aiposter.images.fit_aspect
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
    approval: str | None = None  # auto | review
    review_ttl_hours: float | None = None
    schedule_tz: str | None = None  # "" clears
    schedule_windows: str | None = None  # "" clears
    daily_cap: int | None = None  # 0: no cap
    fit: str | None = None  # pad | crop (images outside a destination's aspect range)
    enabled: bool | None = None
    include_subfolders: bool | None = None  # Drive watches: also files in subfolders
    image_types: list[str] | None = None  # MIME types or names ("jpeg, png"); []: the source's default


def parse_target(s: Session, user: User, text: str) -> tuple[str, int | None]:
    platform, _, conn = text.strip().partition(":")
    try:
        dest = registry.destination(platform)
    except registry.UnknownAdapter as exc:
        raise Invalid(str(exc), field="targets") from None
    if dest.provider is None:
        return platform, None
    if not (conn.isascii() and conn.isdigit()):
        raise Invalid(f"target {text!r} needs a connection id: {platform}:<connection id>", field="targets")
    c = s.get(Connection, int(conn)) if 1 <= int(conn) <= MAX_ROW_ID else None
    if c is None or c.user_id != user.id or c.provider != dest.provider:
        raise Invalid(f"no {platform} connection {conn} on this account", field="targets")
    problem = credentials.unusable_reason(c)
    if problem is not None:
        raise Invalid(f"target {text!r} cannot be used: {problem}", field="targets")
    return platform, c.id


def folder_problem(cfg: Config, user: User, watch: Watch) -> str | None:
    """Why this local watch may not read its folder now, or None. Checked at every poll, because roots
    change with the config, and the folder's owner is who the roots are for. (That no component of the
    folder became a symlink since it was checked is enforced by the source, which opens it without
    following any.)"""
    if watch.source != "local" or watch.folder_set_by_admin:
        return None
    folder = Path(watch.folder)
    if not any(folder.is_relative_to(r) for r in local_roots(cfg, user)):
        return (f"folder {watch.folder} is outside this account's local folders (sources.local_roots); "
                "not read. Point the watch at a folder under them, or ask an admin to set it "
                "(aiposter watch edit ID --folder PATH)")
    return None


def _validate(s: Session, cfg: Config, user: User, spec: WatchSpec, watch: Watch | None,
              allow_any_folder: bool) -> None:
    source = spec.source or (watch.source if watch else "local")
    try:
        entry = registry.source(source)
    except registry.UnknownAdapter as exc:
        raise Invalid(str(exc), field="source") from None
    interval = spec.interval_seconds if spec.interval_seconds is not None else (
        watch.interval_seconds if watch else cfg.watch_defaults.interval_seconds)
    minimum = entry.min_interval_seconds
    if source == "google_drive":
        from aiposter.sources.google_drive.source import min_interval
        minimum = min_interval(cfg)  # lower when push notifications are on (polling is the safety net)
    if interval < minimum:
        raise Invalid(f"interval_seconds must be at least {minimum} for a {source} watch",
                      field="interval_seconds")
    if spec.maximum_age_hours is not None and spec.maximum_age_hours < 0:
        raise Invalid("maximum_age_hours must be 0 (no limit) or more", field="maximum_age_hours")
    if spec.min_spacing_seconds is not None and spec.min_spacing_seconds < 0:
        raise Invalid("min_spacing_seconds must be 0 or more", field="min_spacing_seconds")
    _validate_editorial(spec)
    if spec.image_types is not None:
        try:
            spec.image_types = list(image_types.parse(spec.image_types))
        except ValueError as exc:
            raise Invalid(str(exc), field="image_types") from None
    if spec.captioner:
        try:
            registry.entry(registry.CAPTIONER, spec.captioner)
        except registry.UnknownAdapter as exc:
            raise Invalid(str(exc), field="captioner") from None
    if spec.captioner:
        problem = captioners.check(spec.captioner, cfg)
        if problem:
            raise Invalid(f"captioner {spec.captioner} is not set up on this server: {problem}", field="captioner")
    if spec.prompt_template:
        err = check_template(spec.prompt_template)
        if err:
            raise Invalid(f"prompt_template {err}", field="prompt_template")
    if entry.provider is None and spec.source_connection_id is not None:
        raise Invalid(f"a {source} watch has no source connection", field="source_connection_id")
    if entry.provider is not None:
        # Another user's connection and a missing one get the same answer: ids are not an oracle.
        cid = spec.source_connection_id or (watch.source_connection_id if watch else None)
        c = s.get(Connection, cid) if cid and 1 <= cid <= MAX_ROW_ID else None
        if c is None or c.user_id != user.id or c.provider != entry.provider:
            raise Invalid(f"a {source} watch needs one of your {entry.provider} connections",
                          field="source_connection_id")
    if spec.folder is not None:
        if not spec.folder.strip():
            raise Invalid("folder must not be empty", field="folder")
        try:
            spec.folder = registry.validate_folder(source, cfg, user, spec.folder, allow_any_folder)
        except ValueError as exc:
            raise Invalid(str(exc), field="folder") from None
        except registry.AdapterUnavailable as exc:
            raise Invalid(str(exc), field="source") from None


def _validate_editorial(spec: WatchSpec) -> None:
    from aiposter.core import schedule
    from aiposter.services.review import APPROVAL_MODES

    if spec.approval is not None and spec.approval not in APPROVAL_MODES:
        raise Invalid(f"approval must be one of {', '.join(APPROVAL_MODES)}", field="approval")
    if spec.review_ttl_hours is not None and not 0 < spec.review_ttl_hours <= 24 * 365:
        raise Invalid("review_ttl_hours must be more than 0 and at most a year", field="review_ttl_hours")
    if spec.fit is not None and spec.fit not in FITS:
        raise Invalid(f"fit must be one of {', '.join(FITS)}", field="fit")
    if spec.daily_cap is not None and spec.daily_cap < 0:
        raise Invalid("daily_cap must be 0 (no cap) or more", field="daily_cap")
    try:
        if spec.schedule_windows:
            schedule.parse_windows(spec.schedule_windows)
    except schedule.ScheduleError as exc:
        raise Invalid(f"schedule: {exc}", field="schedule_windows") from None
    try:
        if spec.schedule_tz:
            schedule.zone(spec.schedule_tz)
    except schedule.ScheduleError as exc:
        raise Invalid(str(exc), field="schedule_tz") from None


def _apply(s: Session, user: User, watch: Watch, spec: WatchSpec, allow_any_folder: bool) -> None:
    for f in fields(spec):
        value = getattr(spec, f.name)
        if value is None or f.name == "targets":
            continue
        if f.name == "folder" and (spec.source or watch.source) == "google_drive":
            watch.folder_name = ""  # named by the folder check (services/drive.py)
        elif f.name == "folder" and registry.source(spec.source or watch.source).validate_folder:
            # A folder its source checked is a path (already normalised by the check): name it now; the
            # first listing refines the name.
            watch.folder_name = Path(value).name
            watch.folder_set_by_admin = allow_any_folder
        if f.name in ("captioner", "schedule_tz", "schedule_windows") and value == "":
            value = None
        if f.name == "image_types":
            value = image_types.to_column(tuple(value))
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


def create_watch(s: Session, cfg: Config, user: User, spec: WatchSpec, allow_any_folder: bool = False,
                 keyring=None) -> Watch:
    if not spec.folder:
        raise Invalid("folder is required", field="folder")
    d = cfg.watch_defaults
    if spec.image_types is None and d.image_types:
        spec.image_types = list(d.image_types)
    _validate(s, cfg, user, spec, None, allow_any_folder)
    watch = Watch(user_id=user.id, folder=spec.folder, interval_seconds=d.interval_seconds,
                  min_spacing_seconds=d.min_spacing_seconds, maximum_age_hours=d.maximum_age_hours,
                  review_ttl_hours=d.review_ttl_hours, fit=d.fit)
    s.add(watch)
    s.flush()
    if spec.targets is None:
        spec.targets = ["outbox"]
    _apply(s, user, watch, spec, allow_any_folder)
    watch.baseline_at = watch.created_at
    if watch.source == "google_drive":
        from aiposter.services import drive
        drive.prepare_watch(s, cfg, keyring, watch)  # folder check, name, page token, baseline
    if not watch.name:
        watch.name = watch.folder_name or f"watch {watch.id}"
    s.flush()
    return watch


def update_watch(s: Session, cfg: Config, user: User, watch: Watch, spec: WatchSpec,
                 allow_any_folder: bool = False, keyring=None) -> Watch:
    _validate(s, cfg, user, spec, watch, allow_any_folder)
    folder_changed = spec.folder is not None and spec.folder != watch.folder
    types_before = watch.image_types
    drive_before = watch.source_connection_id if watch.source == "google_drive" else None
    _apply(s, user, watch, spec, allow_any_folder)
    if folder_changed:
        # A new folder gets a new baseline, like a new watch.
        watch.baseline_done = False
        watch.baseline_at = utcnow()
        watch.cursor = None
        watch.last_poll_error = None
    if watch.source == "google_drive" and (folder_changed or spec.source_connection_id is not None
                                           or spec.include_subfolders is not None
                                           or watch.image_types != types_before):
        # What the watch takes changed: a new baseline, so files already there of a type it now takes
        # are not posted as new when Drive next reports them (a rename, say).
        from aiposter.services import drive
        watch.baseline_done, watch.baseline_at = False, utcnow()
        drive.prepare_watch(s, cfg, keyring, watch)
    if drive_before is not None and (spec.enabled is False or watch.source_connection_id != drive_before
                                     or watch.source != "google_drive"):
        from aiposter.services import drive
        drive.release_push(s, cfg, keyring, drive_before)  # the account's last Drive watch: stop its channel
    if spec.interval_seconds is not None or spec.enabled:
        watch.next_poll_at = utcnow()
        if watch.source == "google_drive" and watch.source_connection_id:
            from aiposter.core.drive_feeds import ensure_feed
            ensure_feed(s, watch.source_connection_id, due=utcnow())
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


def delete_watch(s: Session, watch: Watch, media: MediaStore, cfg: Config | None = None, keyring=None) -> None:
    """Delete the watch and its posts' media. The last Drive watch of an account takes the account's push
    channel with it (stopped at Google with ``cfg`` and ``keyring``, best effort; its row at once)."""
    from aiposter.core.models import Post

    for pid in s.exec(select(Post.id).where(Post.watch_id == watch.id)):
        media.delete_post(pid)
    drive_connection = watch.source_connection_id if watch.source == "google_drive" else None
    s.delete(watch)
    s.flush()
    if drive_connection is not None and cfg is not None:
        from aiposter.services import drive
        drive.release_push(s, cfg, keyring, drive_connection)


def poll_now(s: Session, watch: Watch) -> Watch:
    watch.next_poll_at = utcnow()
    if watch.source == "google_drive" and watch.source_connection_id:
        from aiposter.core.drive_feeds import ensure_feed
        ensure_feed(s, watch.source_connection_id, due=utcnow())  # Drive is polled per connection
    return watch


def json_time(dt) -> str | None:
    from aiposter.services.posts import json_time

    return json_time(dt)


def _plain(col):
    return sa.type_coerce(col, sa.String()).label(col.key) if isinstance(col.type, AutoString) else col


# A watch as the API shows it: these columns as they are, plus targets, status and the times below. One list
# for the one-watch view (watch_dict) and the list endpoint's Core query (list_dicts), so they cannot drift.
_OUT = ("id", "name", "source", "source_connection_id", "folder", "folder_name", "interval_seconds",
        "prompt_template", "captioner", "backfill", "maximum_age_hours", "min_spacing_seconds", "approval",
        "review_ttl_hours", "schedule_tz", "schedule_windows", "daily_cap", "fit", "include_subfolders",
        "image_types",
        "enabled", "baseline_done", "last_poll_error")
_TIMES = ("last_poll_at", "next_poll_at", "created_at")


@functools.lru_cache(maxsize=4)
def _list_query(dialect: str) -> sa.Select:
    """Only WatchOut's columns, built once; on SQLite the timestamps as their stored UTC text (see
    posts.json_time): parsing them into datetimes and back was most of the endpoint's own cost."""
    c = Watch.__table__.c
    times = [sa.type_coerce(c[k], sa.String()).label(k) if dialect == "sqlite" else c[k] for k in _TIMES]
    return sa.select(*(_plain(c[k]) for k in _OUT), *times).where(c.user_id == sa.bindparam("uid")).order_by(c.id)


_LIST_TARGETS = (sa.select(WatchTarget.watch_id, WatchTarget.platform, WatchTarget.connection_id)
                 .join(Watch, Watch.id == WatchTarget.watch_id).where(Watch.user_id == sa.bindparam("uid"))
                 .order_by(WatchTarget.id))


def list_dicts(conn: sa.Connection, user_id: int) -> list[dict]:
    """:func:`list_watches` + :func:`watch_dicts` for the list endpoint, ready for JSON (``WatchOut``'s
    fields and rendering): two Core queries, no ORM objects."""
    from aiposter.services.posts import json_time  # once per call, not per value (see json_time above)

    ws = conn.execute(_list_query(conn.dialect.name), {"uid": user_id}).all()
    targets: dict[int, list[str]] = {w[0]: [] for w in ws}
    if ws:
        for wid, platform, connection_id in conn.execute(_LIST_TARGETS, {"uid": user_id}):
            targets[wid].append(platform if connection_id is None else f"{platform}:{connection_id}")
    # Rows as plain tuples zipped with the column names: a Row's attribute access costs microseconds each.
    n = len(_OUT)
    out = []
    for w in ws:
        d = dict(zip(_OUT, w, strict=False))  # the row goes on with the _TIMES columns
        d["targets"] = targets[w[0]]
        d["image_types"] = _types_out(d["image_types"])
        d["status"] = _status(d["last_poll_error"], d["enabled"])
        for k, v in zip(_TIMES, w[n:], strict=True):
            d[k] = json_time(v)
        out.append(d)
    return out


def watch_dicts(s: Session, ws: list[Watch]) -> list[dict]:
    targets = targets_by_watch(s, [w.id for w in ws])
    return [watch_dict(s, w, targets[w.id]) for w in ws]


def watch_dict(s: Session, w: Watch, targets: list[str] | None = None) -> dict:
    if targets is None:
        targets = targets_by_watch(s, [w.id])[w.id]
    d = {k: getattr(w, k) for k in _OUT}
    d["image_types"] = _types_out(d["image_types"])
    d.update(user_id=w.user_id, targets=targets, status=watch_status(w))
    d.update({k: _iso(getattr(w, k)) for k in _TIMES})
    return d


def _types_out(column: str | None) -> list[str] | None:
    """A watch's image types as the API shows them: MIME types, or None for its source's default."""
    return list(image_types.from_column(column)) if column else None


def watch_status(w: Watch) -> str:
    """``error`` while the last poll failed (its reason is ``last_poll_error``), else active or paused."""
    return _status(w.last_poll_error, w.enabled)


def _status(last_poll_error: str | None, enabled: bool) -> str:
    if last_poll_error and last_poll_error.startswith("waiting: "):
        return "waiting"  # its account needs reconnecting, or Drive asked us to back off
    if last_poll_error:
        return "error"
    return "active" if enabled else "paused"


def _iso(dt) -> str | None:
    return dt.isoformat(timespec="seconds") if dt else None
