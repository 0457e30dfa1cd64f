"""The ``aiposter`` command: a thin shell over the service functions.

Exit codes: 0 ok; 2 bad usage or bad config (one clear line on stderr); 1 runtime failure.
"""

from __future__ import annotations

import functools
import inspect
import json
import logging
import os
import signal
import sys
import threading
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Annotated

import typer
from sqlmodel import Session

from aiposter import config as config_mod
from aiposter import crypto, logs
from aiposter.app import App, ensure_quickstart, open_app
from aiposter.config import ConfigError
from aiposter.core.media import store_for
from aiposter.db import AlreadyRunning, pending_migrations, session_scope
from aiposter.db import describe as describe_db
from aiposter.services import Invalid, ServiceError
from aiposter.services import notify as notify_svc
from aiposter.services import posts as posts_svc
from aiposter.services import review as review_svc
from aiposter.services import users as users_svc
from aiposter.services import watches as watches_svc
from aiposter.services.audit import OPERATOR

app = typer.Typer(help="ai-poster: watch folders, caption images, publish posts.", no_args_is_help=True,
                  add_completion=False, pretty_exceptions_enable=False)
user_app = typer.Typer(help="Manage users.", no_args_is_help=True)
watch_app = typer.Typer(help="Manage watches (folders polled for new images).", no_args_is_help=True)
posts_app = typer.Typer(help="Inspect posts.", no_args_is_help=True)
notify_app = typer.Typer(help="Notifications to a user (Apprise URLs).", no_args_is_help=True)
config_app = typer.Typer(help="Configuration.", no_args_is_help=True)
keys_app = typer.Typer(help="Encryption keys for stored credentials.", no_args_is_help=True)
pauses_app = typer.Typer(help="Pauses every replica respects (captioner outages, refused keys, accounts "
                         "to reconnect).", no_args_is_help=True)
app.add_typer(user_app, name="user")
app.add_typer(watch_app, name="watch")
app.add_typer(posts_app, name="posts")
app.add_typer(notify_app, name="notify")
app.add_typer(config_app, name="config")
app.add_typer(keys_app, name="keys")
app.add_typer(pauses_app, name="pauses")
audit_app = typer.Typer(help="The audit log: logins, user administration, connections, exports, deletions.",
                        no_args_is_help=True)
app.add_typer(audit_app, name="audit")
connect_app = typer.Typer(help="Connect accounts from the server's terminal (no browser on the server needed): "
                          "Google by a pasted link, Meta and Threads by importing a token. Tokens are stored "
                          "encrypted.", no_args_is_help=True)
app.add_typer(connect_app, name="connect")

log = logging.getLogger("aiposter")

ConfigOpt = Annotated[str | None, typer.Option("--config", "-c", help="Config file (default: "
                                               "$AIPOSTER_CONFIG, then ./config.toml, then built-in defaults).")]
JsonOpt = Annotated[bool, typer.Option("--json", help="Print JSON.")]


class _State:
    config_path: str | None = None


state = _State()


@app.callback()
def _root(config: ConfigOpt = None) -> None:
    state.config_path = config


def _accept_config_option(command: Callable) -> Callable:
    """``command`` with a ``--config`` option of its own, so that ``aiposter user list --config X`` works as
    well as ``aiposter --config X user list`` (given in both places, the later one wins)."""
    signature = inspect.signature(command, eval_str=True)  # typer reads the Annotated options from it
    if "config" in signature.parameters:
        return command

    @functools.wraps(command)
    def with_config(*args, config: str | None = None, **kwargs):
        if config is not None:
            state.config_path = config
        return command(*args, **kwargs)

    option = inspect.Parameter("config", inspect.Parameter.KEYWORD_ONLY, default=None, annotation=ConfigOpt)
    with_config.__signature__ = signature.replace(parameters=[*signature.parameters.values(), option])
    with_config.__annotations__ = {**command.__annotations__, "config": ConfigOpt}  # a copy: wraps shares it
    return with_config


def fail(message: str, code: int) -> typer.Exit:
    typer.echo(f"aiposter: {message}", err=True)
    return typer.Exit(code)


def load_config() -> config_mod.Config:
    try:
        cfg = config_mod.load(state.config_path)
    except ConfigError as exc:
        raise fail(f"config error: {exc}", 2) from None
    logs.setup(cfg.log.level, cfg.log.format)
    return cfg


def open_db(cfg: config_mod.Config, **kw) -> App:
    try:
        return open_app(cfg, **kw)
    except ConfigError as exc:
        raise fail(f"config error: {exc}", 2) from None
    except AlreadyRunning as exc:
        raise fail(str(exc), 1) from None
    except Exception as exc:  # noqa: BLE001 - e.g. database unreachable: one line, not a traceback
        raise fail(f"cannot open the database: {exc.__class__.__name__}: {_first_line(exc)}", 1) from None


@contextmanager
def cli_session() -> Iterator[tuple[config_mod.Config, Session]]:
    """Config, database and one unit of work for a command; closed (and committed) on the way out."""
    with cli_app(keys=False) as (cfg, _app, s):
        yield cfg, s


@contextmanager
def cli_app(keys: bool = True) -> Iterator[tuple[config_mod.Config, App, Session]]:
    """Like :func:`cli_session`, with the opened app (its keyring, for commands that encrypt)."""
    cfg = load_config()
    application = open_db(cfg, keys=keys, create=False)
    try:
        with session_scope(application.engine) as s:
            yield cfg, application, s
    finally:
        application.close()


def _first_line(exc: Exception) -> str:
    return (str(exc).strip().splitlines() or [""])[0]


def service_call(fn):
    """Map service errors to exit codes: invalid input is usage (2), the rest runtime (1)."""
    try:
        return fn()
    except Invalid as exc:
        raise fail(f"{exc.field + ': ' if exc.field else ''}{exc.message}", 2) from None
    except ServiceError as exc:
        raise fail(exc.message, 1) from None


def confirm(yes: bool, question: str) -> None:
    """Destructive commands ask first; without a terminal to ask on, they need --yes."""
    if yes:
        return
    if not sys.stdin.isatty():
        raise fail("refusing without confirmation: pass --yes", 2)
    typer.confirm(question, abort=True)


def print_table(rows: list[dict], columns: list[str]) -> None:
    if not rows:
        typer.echo("(none)")
        return
    cells = [[("" if r.get(c) is None else str(r.get(c))).replace("\n", " ") for c in columns] for r in rows]
    widths = [min(60, max(len(c), *(len(row[i]) for row in cells))) for i, c in enumerate(columns)]
    typer.echo("  ".join(c.upper().ljust(w) for c, w in zip(columns, widths, strict=True)).rstrip())
    for row in cells:
        typer.echo("  ".join(v[:w].ljust(w) for v, w in zip(row, widths, strict=True)).rstrip())


def print_json(data) -> None:
    typer.echo(json.dumps(data, indent=2, ensure_ascii=False, default=str))


# =========================================================================== run / migrate


@app.command()
def run(no_migrate: Annotated[bool, typer.Option("--no-migrate", help="Do not apply migrations at start.")]
        = False,
        no_api: Annotated[bool, typer.Option("--no-api", help="Do not serve the admin API.")] = False) -> None:
    """Run the daemon: poll watches, caption and publish (and serve the admin API)."""
    serve(no_migrate=no_migrate, with_api=not no_api, with_worker=True)


@app.command()
def worker(no_migrate: Annotated[bool, typer.Option("--no-migrate")] = False) -> None:
    """Run only the scheduler and workers (no API)."""
    serve(no_migrate=no_migrate, with_api=False, with_worker=True)


@app.command()
def api(no_migrate: Annotated[bool, typer.Option("--no-migrate")] = False) -> None:
    """Serve only the admin API (no scheduler; run `aiposter worker` for that)."""
    if not load_config().api.enabled:
        raise fail("the API is disabled in the config ([api] enabled = false)", 2)
    serve(no_migrate=no_migrate, with_api=True, with_worker=False)


def serve(no_migrate: bool, with_api: bool, with_worker: bool) -> None:
    from aiposter.core.daemon import Daemon, instance_id
    from aiposter.core.pipeline import Context

    cfg = load_config()
    if with_worker:
        check_captioner(cfg)
    application = open_db(cfg, migrate=not no_migrate, lock=with_worker, require_current=no_migrate)
    log.info("db.opened", extra=logs.fields(database=describe_db(cfg.db_url), config=cfg.source,
                                            environment=",".join(cfg.environment_variables()) or None))
    try:
        stop = threading.Event()

        def _signal(signum, _frame):
            log.info("daemon.signal", extra=logs.fields(signal=signal.Signals(signum).name))
            stop.set()

        signal.signal(signal.SIGTERM, _signal)
        signal.signal(signal.SIGINT, _signal)
        daemon = None
        if with_worker:
            try:
                ensure_quickstart(application)
            except ConfigError as exc:
                raise fail(f"config error: {exc}", 2) from None
            ctx = Context(cfg, application.engine, owner=instance_id(cfg.daemon.instance_name),
                          keyring=application.keyring)
            daemon = Daemon(ctx)
        server = None
        if with_api and cfg.api.enabled:
            # The API first: if it cannot listen, stop before any work is claimed.
            from aiposter.api.server import start_server

            try:
                server = start_server(application, daemon)
            except RuntimeError as exc:
                raise fail(str(exc), 1) from None
        from aiposter.health import Heartbeat, api_url

        heartbeat = Heartbeat(cfg, worker=daemon is not None,
                              api=api_url(cfg.api.host, server.port) if server is not None else None)
        heartbeat.beat(force=True)
        if daemon is not None:
            announce_media(cfg, served_here=server is not None)
            daemon.heartbeat = heartbeat
            daemon.start()
        stop.wait()
        heartbeat.remove()
        if server is not None:
            server.stop()
        if daemon is not None:
            daemon.stop()
    finally:
        application.close()


def announce_media(cfg: config_mod.Config, served_here: bool) -> None:
    """Say at start how platforms that fetch images by URL (Instagram, Threads) will reach them: the
    signed links point at api.public_url, and only an API process sharing the media directory serves them."""
    from aiposter.core.media import public_base_url

    base = public_base_url(cfg) + "/media/"
    if served_here:
        log.info("media.serving", extra=logs.fields(url=base, directory=str(cfg.media_dir), by="this process"))
    else:
        log.info("media.serving", extra=logs.fields(
            url=base, directory=str(cfg.media_dir),
            by="not this process (no API here): run `aiposter api` or `aiposter run` with the same media "
               "directory and encryption key, reachable at that URL"))
    if not cfg.api.public_url:
        log.warning("media.no_public_url", extra=logs.fields(
            reason=f"api.public_url is not set, so media links point at {base}, which Instagram and Threads "
                   "cannot fetch unless it is public; set api.public_url to the API's public address"))


@app.command()
def migrate() -> None:
    """Apply database migrations."""
    cfg = load_config()
    application = open_db(cfg, migrate=False, keys=False)
    try:
        pending = pending_migrations(application.engine)
        from aiposter.db import migrate as do_migrate

        do_migrate(application.engine)
        typer.echo(f"applied {len(pending)} migration(s) to {describe_db(cfg.db_url)}; database is up to date")
    finally:
        application.close()


# =========================================================================== users


def _read_password(password_stdin: bool) -> str | None:
    if password_stdin:
        return sys.stdin.readline().rstrip("\n")
    if sys.stdin.isatty():
        return typer.prompt("Password", hide_input=True, confirmation_prompt=True)
    return None


@user_app.command("create")
def user_create(email: str,
                name: Annotated[str, typer.Option("--name", help="Display name.")] = "",
                admin: Annotated[bool, typer.Option("--admin", help="Make the user an admin.")] = False,
                password_stdin: Annotated[bool, typer.Option("--password-stdin",
                                                             help="Read the password from stdin.")] = False,
                no_password: Annotated[bool, typer.Option("--no-password",
                                                          help="No login (owns watches only).")] = False,
                as_json: JsonOpt = False) -> None:
    """Create a user (prompts for the password unless --password-stdin or --no-password)."""
    password = None if no_password else _read_password(password_stdin)
    if password is None and not no_password:
        raise fail("no password: give --password-stdin (and pipe it), run interactively, or --no-password", 2)
    with cli_session() as (cfg, s):
        u = service_call(lambda: users_svc.create_user(
            s, email, password, display_name=name, role="admin" if admin else "user"))
        data = _user_dict(u)
    print_json(data) if as_json else typer.echo(f"created {data['role']} {data['email']} (id {data['id']})")


def _user_dict(u) -> dict:
    return {"id": u.id, "email": u.email, "display_name": u.display_name, "role": u.role,
            "disabled": u.disabled, "processing_paused": u.processing_paused,
            "created_at": u.created_at.isoformat(timespec="seconds")}


@user_app.command("password")
def user_password(email: str,
                  password_stdin: Annotated[bool, typer.Option("--password-stdin",
                                                               help="Read the password from stdin.")] = False) -> None:
    """Set a user's password (e.g. to log in as the quickstart owner, or a reset); logs out their sessions."""
    from aiposter.services import auth

    password = _read_password(password_stdin)
    if password is None:
        raise fail("no password: give --password-stdin (and pipe it), or run interactively", 2)
    with cli_session() as (cfg, s):
        u = service_call(lambda: users_svc.get_user_by_email(s, email))
        service_call(lambda: users_svc.set_password(s, u, password))
        revoked = auth.revoke_sessions(s, u)
    typer.echo(f"password of {email} set; {revoked} session(s) logged out")


@user_app.command("list")
def user_list(as_json: JsonOpt = False) -> None:
    """List users."""
    with cli_session() as (cfg, s):
        rows = [_user_dict(u) for u in users_svc.list_users(s)]
    print_json(rows) if as_json else print_table(rows, ["id", "email", "display_name", "role", "disabled"])


@user_app.command("delete")
def user_delete(email: str,
                yes: Annotated[bool, typer.Option("--yes", "-y", help="Do not ask to confirm.")] = False) -> None:
    """Delete a user and everything of theirs: tokens, watches, posts and stored media."""
    with cli_session() as (cfg, s):
        u = service_call(lambda: users_svc.get_user_by_email(s, email))
        confirm(yes, f"Delete {u.email} and all their watches, posts and connections?")
        counts = users_svc.delete_user(s, cfg, u)
    typer.echo(f"deleted {email} ({counts['posts']} post record(s))")


# =========================================================================== watches


def _spec(folder, name, source, connection, interval, targets, template, template_file, captioner, backfill,
          max_age_hours, min_spacing, enabled, approval=None, review_ttl=None, schedule=None, timezone=None,
          daily_cap=None, fit=None) -> watches_svc.WatchSpec:
    if template_file is not None:
        try:
            template = Path(template_file).read_text(encoding="utf-8")
        except OSError as exc:
            raise fail(f"--template-file: cannot read {template_file}: {exc.strerror}", 2) from None
    return watches_svc.WatchSpec(
        folder=folder, name=name, source=source, source_connection_id=connection, interval_seconds=interval,
        targets=targets or None, prompt_template=template, captioner=captioner, backfill=backfill,
        maximum_age_hours=max_age_hours, min_spacing_seconds=min_spacing, enabled=enabled, approval=approval,
        review_ttl_hours=review_ttl, schedule_windows=schedule, schedule_tz=timezone, daily_cap=daily_cap,
        fit=fit)


FolderOpt = Annotated[str | None, typer.Option("--folder", help="Local path, or Drive folder id.")]
NameOpt = Annotated[str | None, typer.Option("--name")]
SourceOpt = Annotated[str | None, typer.Option("--source", help="local | google_drive")]
ConnOpt = Annotated[int | None, typer.Option("--connection", help="Source connection id (Drive).")]
IntervalOpt = Annotated[int | None, typer.Option("--interval", help="Polling interval in seconds.")]
TargetOpt = Annotated[list[str] | None, typer.Option("--target", help="outbox, or PLATFORM:CONNECTION_ID; "
                                                     "repeat for several.")]
TemplateOpt = Annotated[str | None, typer.Option("--template", help="Prompt/caption template (Jinja2).")]
TemplateFileOpt = Annotated[str | None, typer.Option("--template-file")]
CaptionerOpt = Annotated[str | None, typer.Option("--captioner", help="Override the install's captioner.")]
BackfillOpt = Annotated[bool | None, typer.Option("--backfill/--no-backfill",
                                                  help="Post files already in the folder at the first poll.")]
MaxAgeOpt = Annotated[float | None, typer.Option("--max-age-hours", help="Skip files older than this (0: off).")]
SpacingOpt = Annotated[int | None, typer.Option("--min-spacing", help="Minimum seconds between posts.")]
EnabledOpt = Annotated[bool | None, typer.Option("--enabled/--disabled")]
ApprovalOpt = Annotated[str | None, typer.Option("--approval", help="auto | review (wait for the owner's "
                                                 "approval before publishing).")]
ReviewTtlOpt = Annotated[float | None, typer.Option("--review-ttl-hours", help="Unreviewed posts expire after this.")]
ScheduleOpt = Annotated[str | None, typer.Option("--schedule", help='Posting windows, e.g. "mon-fri 08:30-12:00, '
                                                 'sat 10:00-14:00"; "" clears.')]
TimezoneOpt = Annotated[str | None, typer.Option("--timezone", help='IANA zone of the schedule, e.g. Europe/Berlin.')]
DailyCapOpt = Annotated[int | None, typer.Option("--daily-cap", help="Posts per destination per local day (0: off).")]
FitOpt = Annotated[str | None, typer.Option("--fit", help="pad | crop: how an image outside Instagram's (4:5 to "
                                            "1.91:1) or Threads' aspect range is sent there.")]


def _owner(s, email: str | None):
    if email:
        return service_call(lambda: users_svc.get_user_by_email(s, email))
    all_users = users_svc.list_users(s)
    if len(all_users) == 1:
        return all_users[0]
    raise fail("--user EMAIL is required (there is not exactly one user)", 2)


DriveOpt = Annotated[str | None, typer.Option("--drive", help="A Google Drive folder link or id (with "
                                                 "--connection): a Drive watch.")]
SubfoldersOpt = Annotated[bool | None, typer.Option("--subfolders/--no-subfolders",
                                                    help="Drive: also files in subfolders.")]
ImageTypesOpt = Annotated[str | None, typer.Option("--image-types", help='Image types to post, e.g. "jpeg,png,heic" '
                                                   '(names or MIME types); "" for the source\'s default.')]


@watch_app.command("add")
def watch_add(folder: FolderOpt = None, user: Annotated[str | None, typer.Option("--user")] = None,
              name: NameOpt = None, source: SourceOpt = None, connection: ConnOpt = None,
              interval: IntervalOpt = None, target: TargetOpt = None, template: TemplateOpt = None,
              template_file: TemplateFileOpt = None, captioner: CaptionerOpt = None,
              backfill: BackfillOpt = None, max_age_hours: MaxAgeOpt = None, min_spacing: SpacingOpt = None,
              enabled: EnabledOpt = None, approval: ApprovalOpt = None, review_ttl_hours: ReviewTtlOpt = None,
              schedule: ScheduleOpt = None, timezone: TimezoneOpt = None, daily_cap: DailyCapOpt = None,
              fit: FitOpt = None, drive: DriveOpt = None, subfolders: SubfoldersOpt = None,
              image_types: ImageTypesOpt = None,
              as_json: JsonOpt = False) -> None:
    """Add a watch (a local folder with --folder, a Drive folder with --drive URL --connection ID)."""
    if drive:
        if folder:
            raise fail("give --folder or --drive, not both", 2)
        if connection is None:
            raise fail("--drive needs --connection ID (the Google Drive connection; see `aiposter connections`)", 2)
        folder, source = drive, "google_drive"
    if not folder:
        raise fail("--folder (or --drive) is required", 2)
    spec = _spec(folder, name, source, connection, interval, target, template, template_file, captioner,
                 backfill, max_age_hours, min_spacing, enabled, approval, review_ttl_hours, schedule, timezone,
                 daily_cap, fit)
    spec.include_subfolders = subfolders
    spec.image_types = None if image_types is None else [image_types]
    cfg = load_config()
    # A Drive watch reads the connection's tokens: the key is loaded before the unit of work begins.
    application = open_db(cfg, keys=spec.source == "google_drive", create=False)
    try:
        with session_scope(application.engine) as s:
            owner = _owner(s, user)
            w = service_call(lambda: watches_svc.create_watch(s, cfg, owner, spec, allow_any_folder=True,
                                                              keyring=application.keyring))
            data = watches_svc.watch_dict(s, w)
    finally:
        application.close()
    print_json(data) if as_json else typer.echo(f"added watch {data['id']} on {data['folder']}")


@watch_app.command("list")
def watch_list(user: Annotated[str | None, typer.Option("--user")] = None, as_json: JsonOpt = False) -> None:
    """List watches."""
    with cli_session() as (cfg, s):
        owner = service_call(lambda: users_svc.get_user_by_email(s, user)) if user else None
        rows = watches_svc.watch_dicts(s, watches_svc.list_watches(s, owner))
    if as_json:
        print_json(rows)
    else:
        for r in rows:
            r["targets"] = ",".join(r["targets"])
        print_table(rows, ["id", "name", "source", "folder", "interval_seconds", "targets", "status",
                           "last_poll_at", "last_poll_error"])


@watch_app.command("show")
def watch_show(watch_id: int, as_json: JsonOpt = False) -> None:
    """Show one watch."""
    with cli_session() as (cfg, s):
        data = watches_svc.watch_dict(s, service_call(lambda: watches_svc.get_watch(s, watch_id)))
    if as_json:
        print_json(data)
    else:
        for k, v in data.items():
            typer.echo(f"{k:>20}: {v if v is not None else ''}")


@watch_app.command("edit")
def watch_edit(watch_id: int, folder: FolderOpt = None, name: NameOpt = None, source: SourceOpt = None,
               connection: ConnOpt = None, interval: IntervalOpt = None, target: TargetOpt = None,
               template: TemplateOpt = None, template_file: TemplateFileOpt = None,
               captioner: CaptionerOpt = None, backfill: BackfillOpt = None, max_age_hours: MaxAgeOpt = None,
               min_spacing: SpacingOpt = None, enabled: EnabledOpt = None, approval: ApprovalOpt = None,
               review_ttl_hours: ReviewTtlOpt = None, schedule: ScheduleOpt = None, timezone: TimezoneOpt = None,
               daily_cap: DailyCapOpt = None, fit: FitOpt = None,
               image_types: ImageTypesOpt = None, as_json: JsonOpt = False) -> None:
    """Edit a watch (only the options given change). A running daemon picks it up at its next tick."""
    spec = _spec(folder, name, source, connection, interval, target, template, template_file, captioner,
                 backfill, max_age_hours, min_spacing, enabled, approval, review_ttl_hours, schedule, timezone,
                 daily_cap, fit)
    spec.image_types = None if image_types is None else [image_types]
    cfg = load_config()
    application = open_db(cfg, create=False)  # with the key: a Drive watch's folder is checked with its tokens
    try:
        with session_scope(application.engine) as s:
            w = service_call(lambda: watches_svc.get_watch(s, watch_id))
            owner = s.get(users_svc.User, w.user_id)
            service_call(lambda: watches_svc.update_watch(s, cfg, owner, w, spec, allow_any_folder=True,
                                                          keyring=application.keyring))
            data = watches_svc.watch_dict(s, w)
    finally:
        application.close()
    print_json(data) if as_json else typer.echo(f"updated watch {watch_id}")


@watch_app.command("remove")
def watch_remove(watch_id: int, yes: Annotated[bool, typer.Option("--yes", "-y")] = False) -> None:
    """Remove a watch and its post records."""
    with cli_app() as (cfg, application, s):  # with the key: the last Drive watch stops its push channel
        w = service_call(lambda: watches_svc.get_watch(s, watch_id))
        confirm(yes, f"Remove watch {watch_id} ({w.folder}) and its post records?")
        watches_svc.delete_watch(s, w, store_for(cfg), cfg, application.keyring)
    typer.echo(f"removed watch {watch_id}")


# =========================================================================== posts


@posts_app.command("list")
def posts_list(status: Annotated[str | None, typer.Option("--status")] = None,
               watch: Annotated[int | None, typer.Option("--watch")] = None,
               user: Annotated[str | None, typer.Option("--user")] = None,
               limit: Annotated[int, typer.Option("--limit")] = 50,
               before: Annotated[int | None, typer.Option("--before", help="Cursor: posts older than this id.")]
               = None,
               as_json: JsonOpt = False) -> None:
    """List posts, newest first."""
    with cli_session() as (cfg, s):
        owner = service_call(lambda: users_svc.get_user_by_email(s, user)) if user else None
        rows = [posts_svc.post_dict(s, p) for p in service_call(lambda: posts_svc.list_posts(
            s, owner, status=status, watch_id=watch, limit=limit, before_id=before))]
    if as_json:
        print_json(rows)
        return
    for r in rows:
        r["why"] = r["waiting_for"] or r["last_error"]  # why it waits, or why it failed
    print_table(rows, ["id", "watch_id", "file_name", "status", "created_at", "why"])


@posts_app.command("show")
def posts_show(post_id: int, as_json: JsonOpt = False) -> None:
    """Show a post: captions, per-target status, platform ids, errors, token usage, history."""
    with cli_session() as (cfg, s):
        data = posts_svc.post_dict(s, service_call(lambda: posts_svc.get_post(s, post_id)), detail=True)
    if as_json:
        print_json(data)
        return
    for k in ("id", "status", "waiting_for", "file_name", "folder_name", "watch_id", "capture_time",
              "captioner", "last_error", "created_at", "finished_at"):
        typer.echo(f"{k:>14}: {data.get(k) if data.get(k) is not None else ''}")
    usage = data["usage"]
    if usage.get("input_tokens") is not None:
        typer.echo(f"{'tokens':>14}: {usage.get('input_tokens')} in, {usage.get('output_tokens')} out "
                   f"({usage.get('provider')} {usage.get('model', '')})")
    for platform, text in data["captions"].items():
        typer.echo(f"\ncaption [{platform}]:\n  " + text.replace("\n", "\n  "))
    if data["alt_text"]:
        typer.echo(f"\nalt text: {data['alt_text']}")
    typer.echo("\ntargets:")
    for t in data["targets"]:
        typer.echo(f"  #{t['id']} {t['platform']}: {t['status']} (attempts {t['attempts']})"
                   + (f" id={t['platform_post_id']}" if t["platform_post_id"] else "")
                   + (f"\n      error: {t['last_error']}" if t["last_error"] else ""))
    typer.echo("\nhistory:")
    for e in data["events"]:
        typer.echo(f"  {e['at']}  {e['state']:<10} {e['message']}")


@posts_app.command("retry")
def posts_retry(post_id: int, target_id: Annotated[int | None, typer.Argument()] = None) -> None:
    """Retry now: a waiting post (or target) becomes due at once, testing the pause that holds it; a
    failed target (all of a finished post's failed targets without TARGET_ID) is sent again."""
    with cli_session() as (cfg, s):
        p = service_call(lambda: posts_svc.get_post(s, post_id))
        if target_id is not None:
            service_call(lambda: posts_svc.retry_target(s, p, target_id))
            typer.echo(f"target {target_id} of post {post_id} queued again")
            return
        again = service_call(lambda: posts_svc.retry_post(s, p))
    typer.echo(f"post {post_id} queued again" + (f" ({len(again)} target(s))" if again else ": due now"))


@posts_app.command("review")
def posts_review(post_id: Annotated[int | None, typer.Argument(help="A post; without it, every post "
                                                                   "awaiting review.")] = None,
                 as_json: JsonOpt = False) -> None:
    """What would be published: each target's caption with its length and limit, and the alt text."""
    with cli_session() as (cfg, s):
        if post_id is None:
            rows = [posts_svc.post_dict(s, p) for p in posts_svc.list_posts(s, status="awaiting_review", limit=500)]
            print_json(rows) if as_json else print_table(rows, ["id", "watch_id", "file_name", "waiting_for"])
            return
        data = review_svc.review_dict(s, service_call(lambda: posts_svc.get_post(s, post_id)))
    if as_json:
        print_json(data)
        return
    typer.echo(f"post {data['post_id']} ({data['file_name']}): {data['status']}, review until "
               f"{data['review_expires_at'] or '-'}")
    for t in data["targets"]:
        typer.echo(f"\n#{t['id']} {t['platform']} [{t['status']}] {t['length']}/{t['max_length']}"
                   + (" edited" if t["edited"] else "") + ":\n  " + t["caption"].replace("\n", "\n  "))
    typer.echo(f"\nalt text: {data['alt_text']}")


def _review_action(post_id: int, action, done: str) -> None:
    with cli_session() as (cfg, s):
        p = service_call(lambda: posts_svc.get_post(s, post_id))
        service_call(lambda: action(s, cfg, p))
    typer.echo(done)


@posts_app.command("approve")
def posts_approve(post_id: int, target: Annotated[list[int] | None, typer.Option(
        "--target", help="Approve only this target id (repeat); the others are skipped.")] = None) -> None:
    """Approve a post in review: it publishes exactly the captions shown by `posts review`."""
    _review_action(post_id, lambda s, cfg, p: review_svc.approve(s, p, OPERATOR, target or None),
                   f"post {post_id} approved")


@posts_app.command("reject")
def posts_reject(post_id: int, reason: Annotated[str, typer.Option("--reason")] = "") -> None:
    """Reject a post in review: nothing is published and its image is deleted at once."""
    _review_action(post_id, lambda s, cfg, p: review_svc.reject(s, p, OPERATOR, store_for(cfg), reason),
                   f"post {post_id} rejected")


@posts_app.command("edit")
def posts_edit(post_id: int,
               caption: Annotated[list[str] | None, typer.Option(
                   "--caption", help="TARGET=TEXT (a target id or a platform); repeat for several.")] = None,
               alt_text: Annotated[str | None, typer.Option("--alt-text")] = None) -> None:
    """Edit captions and alt text of a post in review (checked against each platform's limits)."""
    captions = {}
    for item in caption or []:
        key, sep, text = item.partition("=")
        if not sep:
            raise fail(f"--caption {item!r}: write TARGET=TEXT", 2)
        captions[key.strip()] = text
    _review_action(post_id, lambda s, cfg, p: review_svc.edit(s, p, OPERATOR, captions or None, alt_text),
                   f"post {post_id} edited")


@posts_app.command("regenerate")
def posts_regenerate(post_id: int, instruction: Annotated[str, typer.Option(
        "--instruction", help='What to change, e.g. "shorter, no emoji".')] = "") -> None:
    """Ask the captioner for new captions; the post comes back to review."""
    _review_action(post_id, lambda s, cfg, p: review_svc.regenerate(s, p, OPERATOR, instruction),
                   f"post {post_id}: new captions requested")


@posts_app.command("publish-now")
def posts_publish_now(post_id: int) -> None:
    """Publish without waiting for the watch's posting window or daily cap (min_spacing still holds)."""
    _review_action(post_id, lambda s, cfg, p: review_svc.publish_now(s, p, OPERATOR),
                   f"post {post_id} will publish without waiting for its schedule")


# =========================================================================== notifications


@notify_app.command("add")
def notify_add(url: Annotated[str, typer.Argument(help="An Apprise URL: ntfy://topic, tgram://TOKEN/CHAT, "
                                                       "mailto://..., json://host/path ...")],
               user: Annotated[str | None, typer.Option("--user")] = None,
               label: Annotated[str, typer.Option("--label")] = "") -> None:
    """Add a notification URL for a user (stored encrypted; shown masked)."""
    with cli_app() as (cfg, application, s):
        owner = _owner(s, user)
        ch = service_call(lambda: notify_svc.add_channel(s, application.keyring, owner, url, label))
        shown = notify_svc.channel_dict(ch, application.keyring)
    typer.echo(f"added notification URL {shown['id']}: {shown['url']}")


@notify_app.command("list")
def notify_list(user: Annotated[str | None, typer.Option("--user")] = None, as_json: JsonOpt = False) -> None:
    """A user's notification URLs (masked) and their latest notifications."""
    with cli_app() as (cfg, application, s):
        owner = _owner(s, user)
        rows = [notify_svc.channel_dict(c, application.keyring) for c in notify_svc.list_channels(s, owner)]
        recent = [notify_svc.notification_dict(n) for n in notify_svc.recent(s, owner, limit=10)]
    if as_json:
        print_json({"channels": rows, "recent": recent})
        return
    print_table(rows, ["id", "label", "url", "created_at"])
    if recent:
        typer.echo("")
        print_table(recent, ["id", "kind", "status", "title", "created_at", "sent_at", "last_error"])


@notify_app.command("remove")
def notify_remove(channel_id: int, user: Annotated[str | None, typer.Option("--user")] = None) -> None:
    """Remove a notification URL."""
    with cli_session() as (cfg, s):
        owner = _owner(s, user)
        service_call(lambda: notify_svc.remove_channel(s, owner, channel_id))
    typer.echo(f"removed notification URL {channel_id}")


@notify_app.command("test")
def notify_test(user: Annotated[str | None, typer.Option("--user")] = None) -> None:
    """Send a sample message to the user's notification URLs now."""
    with cli_app() as (cfg, application, s):
        owner = _owner(s, user)
        result = service_call(lambda: notify_svc.send_test(s, application.keyring, cfg, owner))
    if not result.ok:
        raise fail(f"not delivered: {result.error}", 1)
    typer.echo("test notification sent")


# =========================================================================== pauses


@pauses_app.command("list")
def pauses_list(as_json: JsonOpt = False) -> None:
    """What is paused, until when, why, and how many posts each pause holds."""
    from aiposter.services import pauses as pauses_svc

    with cli_session() as (cfg, s):
        rows = pauses_svc.list_pauses(s)
    print_json(rows) if as_json else print_table(rows, ["scope", "until", "code", "held", "reason"])


@pauses_app.command("clear")
def pauses_clear(scope: Annotated[str, typer.Argument(help="e.g. captioner:openai or connection:12")]) -> None:
    """Lift a pause now: the posts it holds are due at once (on every replica)."""
    from aiposter.services import pauses as pauses_svc

    with cli_session() as (cfg, s):
        released = service_call(lambda: pauses_svc.clear_pause(s, scope))
    typer.echo(f"{scope} no longer paused; {released} post(s) or target(s) released")


# =========================================================================== config / keys


def check_captioner(cfg: config_mod.Config) -> None:
    """The install's captioner must be usable before any photo waits on it."""
    from aiposter import captioners

    problem = captioners.check(cfg.captioner.default, cfg)
    if problem:
        raise fail(f"config error: [captioner] default = {cfg.captioner.default!r}: {problem}", 2)


@audit_app.command("list")
def audit_list(limit: Annotated[int, typer.Option("--limit", min=1, max=10_000)] = 50,
               user: Annotated[str | None, typer.Option("--user", help="Only events where this user (EMAIL) "
                                                                        "acted or was acted on.")] = None,
               action: Annotated[str | None, typer.Option("--action", help="e.g. login.failed")] = None,
               before: Annotated[int | None, typer.Option("--before", help="Only events older than this id.")]
               = None,
               as_json: JsonOpt = False) -> None:
    """Show audit events, newest first."""
    from aiposter.services import audit

    with cli_session() as (cfg, s):
        user_id = service_call(lambda: users_svc.get_user_by_email(s, user)).id if user else None
        rows = [audit.event_dict(e) for e in audit.list_events(s, limit=limit, before_id=before, action=action,
                                                               user_id=user_id)]
    for r in rows:
        r["actor"] = r["actor_email"] or (f"user {r['actor_id']}" if r["actor_id"] else
                                        "operator" if r["client"] == "cli" else "anonymous")
        r["subject"] = r["subject_email"] or (f"user {r['subject_id']}" if r["subject_id"] else "")
    print_json(rows) if as_json else print_table(rows, ["id", "at", "action", "actor", "subject", "client",
                                                        "detail"])


def meta_configured(cfg: config_mod.Config) -> bool:
    """A Meta app is set up: Instagram/Threads targets can exist, and they fetch images from this server."""
    return bool(cfg.oauth.meta.app_id or cfg.oauth.threads.app_id)


def public_media_probe(cfg: config_mod.Config) -> tuple[bool, str]:
    """Fetch a sample image through ``api.public_url`` as Meta's crawler does (a signed probe link the
    running server's media route answers for a minute): (ok, what happened)."""
    from datetime import UTC, datetime

    from aiposter.core.media import urls_for
    from aiposter.publishers.meta.steps import media_url_problem

    if not cfg.api.enabled:
        return False, ("[api] enabled is false: nothing serves images to Instagram and Threads (the media "
                       "route is part of the API)")
    try:
        keyring = crypto.load_keyring(cfg, create=False)
    except ConfigError as exc:
        return False, f"cannot sign a probe link for the media route: {exc}"
    url = urls_for(cfg, keyring).probe_url(datetime.now(UTC))
    problem = media_url_problem(url, timeout=cfg.publishers.meta.probe_timeout_seconds)
    if problem:
        return False, f"Meta's crawler could not fetch a sample image through [api] public_url: {problem}"
    return True, f"Meta's crawler fetched a sample image from {cfg.api.public_url.rstrip('/')}/media/"


def public_media_warnings(cfg: config_mod.Config) -> list[str]:
    """Instagram and Threads fetch each image from ``api.public_url``: say so when it cannot work."""
    import ipaddress
    from urllib.parse import urlparse

    if not meta_configured(cfg):
        return []
    url = cfg.api.public_url
    if not url:
        return ["[api] public_url is empty: Instagram and Threads fetch images from this server, so set it to "
                "an https address reachable from the internet (their targets wait until then)"]
    host = urlparse(url).hostname or ""
    try:
        private = ipaddress.ip_address(host).is_private or ipaddress.ip_address(host).is_loopback
    except ValueError:
        private = host == "localhost" or host.endswith((".local", ".internal", ".lan"))
    if private:
        return [f"[api] public_url {url} is a private address: Meta's servers cannot fetch images from it, so "
                "Instagram and Threads targets will wait"]
    return []


@config_app.command("check")
def config_check(as_json: JsonOpt = False) -> None:
    """Validate the config and print the effective values (secrets masked). With a Meta app set up, also
    fetch a sample image through api.public_url as Meta's crawler does (the server must be running); exit
    1 when Instagram and Threads could not get their images, 2 when the config is invalid."""
    cfg = load_config()
    try:
        from aiposter.db import check_url

        check_url(cfg.db_url)
    except ConfigError as exc:
        raise fail(f"config error: {exc}", 2) from None
    check_captioner(cfg)
    warnings = public_media_warnings(cfg)
    if meta_configured(cfg) and cfg.api.public_url:
        ok, said = public_media_probe(cfg)
        warnings += [] if ok else [said]
        if ok:
            typer.echo(f"ok: {said}", err=True)
    for warning in warnings:
        typer.echo(f"warning: {warning}", err=True)
    data = config_mod.masked(cfg)
    if as_json:
        print_json(data)
    else:
        typer.echo(f"# effective configuration; secrets masked\n# config file: {cfg.source}\n"
                   f"# database: {describe_db(cfg.db_url)}\n# after each key: where its value comes from\n")
        typer.echo(config_mod.to_toml(data, origins=cfg))
    if warnings:  # valid, but Instagram and Threads cannot get their images: exit 1 (a config error is 2)
        raise typer.Exit(1)


@connect_app.command("import")
def connect_import(
        platform: Annotated[str, typer.Option("--platform", help="threads, facebook (a Page token) or instagram "
                                              "(the Page token of the Page it is linked to)")],
        token_file: Annotated[Path, typer.Option("--token-file", help="A file holding the access token")],
        user: Annotated[str, typer.Option("--user", help="Email of the user the connection belongs to")]) -> None:
    """Store an access token an operator already has, after checking it against the platform's API."""
    from aiposter.core.errors import StepError
    from aiposter.publishers.meta import wiring
    from aiposter.services import connections, oauth, users

    if platform not in ("threads", "facebook", "instagram"):
        raise fail("--platform must be threads, facebook or instagram", 2)
    try:
        token = token_file.read_text().strip()
    except OSError as exc:
        raise fail(f"cannot read {token_file}: {exc.strerror}", 2) from None
    if not token or len(token) > 4096 or any(c.isspace() for c in token):
        raise fail(f"{token_file} does not hold one access token", 2)
    cfg = load_config()
    try:
        imported = wiring.import_token(cfg, platform, token)
    except StepError as exc:
        raise fail(f"the token was refused: {exc}", 1) from None
    application = open_db(cfg, create=False)
    try:
        with session_scope(application.engine) as s:
            owner = service_call(lambda: users.get_user_by_email(s, user))
            [c] = connections.store(s, application.keyring, owner.id, platform, [oauth.Account(
                imported.account_id, imported.account_name, imported.secrets, oauth.SCOPES[platform],
                expires_at=imported.expires_at)], client="cli")
            cid, name = c.id, c.account_name
    finally:
        application.close()
    typer.echo(f"connection {cid}: {platform} account {name or imported.account_id} for {user}; use it as the "
               f"watch target {platform}:{cid}")


@app.command()
def health() -> None:
    """Exit 0 if the aiposter process on this host (container) is healthy: its scheduler ticks and its API
    answers, whichever it runs (for HEALTHCHECK; reads the heartbeat file in data_dir, no database)."""
    from aiposter import health as health_mod

    ok, message = health_mod.check(load_config())
    if not ok:
        raise fail(f"unhealthy: {message}", 1)
    typer.echo(message)


@keys_app.command("new")
def keys_new() -> None:
    """Print a new encryption key (KEYID:BASE64). Store it as security.encryption_key(_file)."""
    typer.echo(crypto.new_key().encode())


def _config_option_everywhere(typer_app: typer.Typer) -> None:
    for info in typer_app.registered_commands:
        info.callback = _accept_config_option(info.callback)
    for group in typer_app.registered_groups:
        _config_option_everywhere(group.typer_instance)


_config_option_everywhere(app)


def private_umask() -> None:
    """Everything the daemon writes (database, key, media in flight, outbox) is for its own user only,
    wherever it runs (systemd sets UMask=0077 too; Docker and a shell usually leave 0022)."""
    os.umask(os.umask(0o077) | 0o077)


def main() -> None:
    private_umask()
    # Standalone mode: usage errors exit 2, typer.Exit carries our codes, an aborted prompt exits 1.
    app(prog_name="aiposter")


# =========================================================================== connections (headless OAuth)


@connect_app.command("google")
def connect_google(user: Annotated[str | None, typer.Option("--user", help="The account to connect it to.")] = None,
                   url: Annotated[str | None, typer.Option(
                       "--url", help="The address the browser was sent to after consenting (else asked).")] = None,
                   as_json: JsonOpt = False) -> None:
    """Connect a Google Drive account: open the printed link in any browser, consent, then either let
    Google's redirect reach the API (the connection is made there) or paste the address the browser ended
    on (it may show an error page if the API is not reachable from it: the address is what counts)."""
    from urllib.parse import parse_qs, urlparse

    from sqlmodel import select

    from aiposter.core.models import OAuthState, User
    from aiposter.services import connections as conn_svc
    from aiposter.services.auth import hash_token

    cfg = load_config()
    application = open_db(cfg, create=False)
    redirect = f"{(cfg.api.public_url or f'http://{cfg.api.host}:{cfg.api.port}').rstrip('/')}" \
               "/api/v1/connections/google_drive/callback"
    try:
        with session_scope(application.engine) as s:
            owner = _owner(s, user)
            owner_id = owner.id
            started = service_call(lambda: conn_svc.start(s, cfg, application.keyring, owner, "google_drive",
                                                          redirect))
        typer.echo("Open this link in a browser, sign in to Google and allow read-only Drive access:\n")
        typer.echo(f"  {started['authorize_url']}\n")
        pasted = url if url is not None else typer.prompt(
            "Then paste the address your browser was sent to (or just press Enter once the page said the "
            "account was connected)", default="", show_default=False)
        with session_scope(application.engine) as s:
            owner = s.get(User, owner_id)
            if pasted.strip():
                q = {k: v[0] for k, v in parse_qs(urlparse(pasted.strip()).query).items()}
                if q.get("error"):
                    raise fail(f"Google did not grant access: {q.get('error_description') or q['error']}", 1)
                if not q.get("code") or not q.get("state"):
                    raise fail("that address has no code and state; paste the whole address from the browser's "
                               "address bar", 2)
                if q["state"] != started["state"]:
                    raise fail("that address belongs to another connection attempt; run the command again", 2)
                try:
                    linked = conn_svc.finish(s, cfg, application.keyring, "google_drive", q["state"], q["code"],
                                             redirect, user=owner, client="cli")
                except ServiceError as exc:
                    raise fail(exc.message, 1) from None
                except Exception as exc:  # noqa: BLE001 - OAuthFailed and friends: one line
                    raise fail(str(exc), 1) from None
            else:
                state_hash = hash_token(started["state"])
                pending = s.exec(select(OAuthState).where(OAuthState.state_hash == state_hash)).first()
                if pending is not None:
                    raise fail("the connection was not completed through the API yet; run the command again and "
                               "paste the address instead", 1)
                linked = [c for c in conn_svc.list_connections(s, owner) if c.provider == "google_drive"]
            rows = [conn_svc.connection_dict(c) for c in linked]
    finally:
        application.close()
    if as_json:
        print_json(rows)
    else:
        for r in rows:
            typer.echo(f"connected Google Drive account {r['account_name']} as connection {r['id']}")


@app.command("connections")
def connections_list(user: Annotated[str | None, typer.Option("--user")] = None, as_json: JsonOpt = False) -> None:
    """List connected accounts with their status (needs_reauth: the user must reconnect) and last error."""
    from aiposter.services import connections as conn_svc

    with cli_session() as (cfg, s):
        owners = [_owner(s, user)] if user else users_svc.list_users(s)
        rows = [dict(conn_svc.connection_dict(c), user=o.email) for o in owners
                for c in conn_svc.list_connections(s, o)]
    if as_json:
        print_json(rows)
    else:
        print_table(rows, ["id", "user", "provider", "account_name", "status", "last_error"])
