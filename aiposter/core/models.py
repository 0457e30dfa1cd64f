"""The database schema: the single source of truth for every watch, file and post.

Times are aware UTC datetimes (``timestamptz`` on PostgreSQL; SQLite stores them as UTC text).
States are short strings (see :mod:`aiposter.core.states`) so migrations stay trivial.
Everything a user owns hangs off ``user.id`` with ``ON DELETE CASCADE``, so deleting an account removes
its rows in one statement on both databases.
"""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

import sqlalchemy as sa
from sqlmodel import Field, SQLModel


def utcnow() -> datetime:
    return datetime.now(UTC)


def _fk(target: str, ondelete: str = "CASCADE", nullable: bool = False, index: bool = True) -> Any:
    return Field(
        default=None,
        sa_column=sa.Column(sa.Integer, sa.ForeignKey(target, ondelete=ondelete), nullable=nullable,
                            index=index),
    )


def _json(default_factory) -> Any:
    return Field(default_factory=default_factory, sa_column=sa.Column(sa.JSON, nullable=False))


def _text(nullable: bool = True) -> Any:
    return Field(default=None if nullable else "", sa_column=sa.Column(sa.Text, nullable=nullable))


class User(SQLModel, table=True):
    __tablename__ = "user_account"
    id: int | None = Field(default=None, primary_key=True)
    email: str = Field(sa_column=sa.Column(sa.String(320), nullable=False, unique=True))
    display_name: str = ""
    password_hash: str | None = None
    role: str = "user"  # user | admin
    disabled: bool = False
    processing_paused: bool = False
    brand_voice: str = _text(nullable=False)
    default_hashtags: list[str] = _json(list)
    created_at: datetime = Field(default_factory=utcnow)
    updated_at: datetime = Field(default_factory=utcnow)


class AuthSession(SQLModel, table=True):
    """An opaque bearer token, stored only as its SHA-256 hash."""

    __tablename__ = "auth_session"
    id: int | None = Field(default=None, primary_key=True)
    user_id: int = _fk("user_account.id")
    token_hash: str = Field(sa_column=sa.Column(sa.String(64), nullable=False, unique=True))
    created_at: datetime = Field(default_factory=utcnow)
    expires_at: datetime
    last_used_at: datetime | None = None
    revoked_at: datetime | None = None
    client: str = ""


class Connection(SQLModel, table=True):
    """A user's link to an external account (Drive, a Facebook Page, Instagram, Threads)."""

    __tablename__ = "connection"
    __table_args__ = (sa.UniqueConstraint("user_id", "provider", "account_id"),)
    id: int | None = Field(default=None, primary_key=True)
    user_id: int = _fk("user_account.id")
    provider: str  # google_drive | facebook | instagram | threads
    account_id: str = ""
    account_name: str = ""
    credentials: str | None = _text()  # ciphertext from aiposter.crypto, never plaintext
    scopes: str = ""
    # When the *user* must reconnect (a long-lived token's end, e.g. Threads' 60 days); None when a
    # refresh token keeps the connection alive (Google). Short access-token expiries live in the secrets.
    token_expires_at: datetime | None = None
    status: str = "active"  # active | expiring | expired | needs_reauth | error
    last_error: str | None = _text()
    last_checked_at: datetime | None = None
    created_at: datetime = Field(default_factory=utcnow)
    updated_at: datetime = Field(default_factory=utcnow)


class Watch(SQLModel, table=True):
    """A folder polled on an interval; new files become posts to its targets."""

    __tablename__ = "watch"
    __table_args__ = (sa.Index("ix_watch_due", "enabled", "next_poll_at"),)
    id: int | None = Field(default=None, primary_key=True)
    user_id: int = _fk("user_account.id")
    name: str = ""
    source: str = "local"  # local | google_drive
    source_connection_id: int | None = _fk("connection.id", ondelete="SET NULL", nullable=True)
    folder: str = Field(sa_column=sa.Column(sa.Text, nullable=False))
    folder_name: str = ""
    interval_seconds: int = 300
    prompt_template: str | None = _text()
    captioner: str | None = None  # None: the install's default
    backfill: bool = False
    maximum_age_hours: float = 0.0  # 0: no limit
    min_spacing_seconds: int = 0
    # Editorial control (aiposter.services.review, aiposter.core.schedule): "auto" publishes once
    # captioned, "review" waits for the owner's approval (up to review_ttl_hours, then expires).
    approval: str = Field(default="auto", sa_column=sa.Column(sa.String(20), nullable=False,
                                                               server_default="auto"))
    review_ttl_hours: float = Field(default=72.0, sa_column=sa.Column(sa.Float, nullable=False,
                                                                       server_default="72"))
    # Posting schedule: an IANA zone and weekly windows ("mon-fri 08:30-12:00, sat 10:00-14:00"), and at
    # most daily_cap posts per destination per local day (0: no cap). No windows: any time.
    schedule_tz: str | None = None
    schedule_windows: str | None = _text()
    daily_cap: int = Field(default=0, sa_column=sa.Column(sa.Integer, nullable=False, server_default="0"))
    # An image outside a destination's aspect range (Instagram 4:5..1.91:1, Threads 1:10..10:1) goes there
    # "pad"ded onto a blurred copy of itself or "crop"ped about its centre (aiposter.images.fit_aspect).
    fit: str = Field(default="pad", sa_column=sa.Column(sa.String(10), nullable=False, server_default="pad"))
    enabled: bool = True
    # True when an admin (the CLI) chose the folder: it need not lie under the owner's local roots.
    folder_set_by_admin: bool = Field(default=False, sa_column=sa.Column(
        sa.Boolean, nullable=False, server_default=sa.false()))
    baseline_done: bool = False
    # Files that arrived before this moment are the baseline (not posted unless backfill): the folder as
    # it was when the watch was created or pointed at a new folder, not as it is at the first poll.
    baseline_at: datetime | None = None
    # Drive watches: also files in subfolders (any depth), and the shared drive holding the folder (None:
    # My Drive), from the folder check at creation.
    include_subfolders: bool = Field(default=False, sa_column=sa.Column(
        sa.Boolean, nullable=False, server_default=sa.false()))
    drive_id: str | None = None
    # The image types it posts, canonical MIME types comma-separated (aiposter.core.image_types); None:
    # its source's default (Drive: JPEG, PNG, WebP, HEIC/HEIF; local: whatever the decoder reads).
    image_types: str | None = _text()
    cursor: str | None = _text()  # source-specific resume state (e.g. a Drive changes token)
    next_poll_at: datetime = Field(default_factory=utcnow)
    last_poll_at: datetime | None = None
    last_poll_error: str | None = _text()
    next_publish_at: datetime | None = None
    lease_owner: str | None = None
    lease_expires_at: datetime | None = None
    created_at: datetime = Field(default_factory=utcnow)
    updated_at: datetime = Field(default_factory=utcnow)


class WatchTarget(SQLModel, table=True):
    """One destination of a watch: a platform and, except for the outbox, the connection to post with."""

    __tablename__ = "watch_target"
    id: int | None = Field(default=None, primary_key=True)
    watch_id: int = _fk("watch.id")
    platform: str  # outbox | facebook | instagram | threads
    connection_id: int | None = _fk("connection.id", nullable=True)


class SourceFile(SQLModel, table=True):
    """Every file a watch has seen, and what was decided about it (queued, baseline, skipped...)."""

    __tablename__ = "source_file"
    __table_args__ = (sa.UniqueConstraint("watch_id", "ref"),)
    id: int | None = Field(default=None, primary_key=True)
    watch_id: int = _fk("watch.id", index=False)
    ref: str = Field(sa_column=sa.Column(sa.Text, nullable=False))
    name: str = ""
    size: int | None = Field(default=None, sa_column=sa.Column(sa.BigInteger, nullable=True))
    fingerprint: str = ""
    source_time: datetime | None = None
    first_seen_at: datetime = Field(default_factory=utcnow)
    last_seen_at: datetime = Field(default_factory=utcnow)
    status: str = "settling"  # settling | queued | baseline | skipped
    reason: str | None = _text()


class Post(SQLModel, table=True):
    """One file on its way out: moves detected -> downloaded -> captioned -> publishing -> done."""

    __tablename__ = "post"
    __table_args__ = (
        sa.Index("ix_post_due", "status", "next_attempt_at"),
        sa.Index("ix_post_user_created", "user_id", "id"),
        sa.Index("ix_post_user_status", "user_id", "status", "id"),  # GET /posts?status=... per user
        sa.Index("ux_post_watch_content", "watch_id", "content_hash", unique=True),
    )
    id: int | None = Field(default=None, primary_key=True)
    user_id: int = _fk("user_account.id", index=False)
    watch_id: int = _fk("watch.id")
    # SHA-256 of the source bytes, set at download; unique per watch among posts that are (or will be)
    # published, so the same photo under a second name or copied again is not posted twice. Released
    # (NULL) when a post ends failed or skipped, so dropping the file again gives it another chance.
    content_hash: str | None = Field(default=None, sa_column=sa.Column(sa.String(64), nullable=True))
    source_file_id: int | None = _fk("source_file.id", nullable=True)
    source_ref: str = Field(sa_column=sa.Column(sa.Text, nullable=False))
    file_name: str = ""
    folder_name: str = ""
    description: str = ""
    source_time: datetime | None = None
    capture_time: datetime | None = None
    status: str = "detected"
    step_attempts: int = 0
    next_attempt_at: datetime = Field(default_factory=utcnow)
    lease_owner: str | None = None
    lease_expires_at: datetime | None = None
    last_error: str | None = _text()
    paused_by: str | None = Field(default=None, index=True)  # the pause scope holding it (lifting releases it)
    media_key: str | None = None  # the prepared image in the media store (aiposter.core.media), in flight only
    media_bytes: int | None = None
    width: int | None = None
    height: int | None = None
    captioner: str | None = None
    captions: dict[str, str] = _json(dict)
    hashtags: list[str] = _json(list)
    alt_text: str = _text(nullable=False)
    usage: dict[str, Any] = _json(dict)
    # Review: when an unreviewed post expires; set by publish-now to go out without waiting for the
    # watch's schedule (it still honours min_spacing_seconds).
    review_expires_at: datetime | None = None
    review_note: str | None = _text()  # the owner's instruction for regenerating the captions (review)
    released_at: datetime | None = None  # when it passed the schedule gates into publishing (daily caps)
    skip_schedule: bool = Field(default=False, sa_column=sa.Column(sa.Boolean, nullable=False,
                                                                     server_default=sa.false()))
    created_at: datetime = Field(default_factory=utcnow)
    updated_at: datetime = Field(default_factory=utcnow)
    finished_at: datetime | None = None


class PostTarget(SQLModel, table=True):
    """A post's fate on one destination, with the platform's ids and the last error."""

    __tablename__ = "post_target"
    id: int | None = Field(default=None, primary_key=True)
    post_id: int = _fk("post.id")
    platform: str
    connection_id: int | None = _fk("connection.id", ondelete="SET NULL", nullable=True)
    status: str = "pending"  # pending | publishing | published | failed | skipped
    attempts: int = 0
    next_attempt_at: datetime = Field(default_factory=utcnow)
    last_error: str | None = _text()
    paused_by: str | None = Field(default=None, index=True)  # e.g. "connection:12" while it needs re-auth
    platform_post_id: str | None = None
    platform_url: str | None = _text()
    # The exact text published on this target, when the owner edited or approved it (review); None:
    # the post's generated caption for the platform.
    caption: str | None = _text()
    approved_by: str | None = None  # who approved this target (review), e.g. "user:3 ann@example.com"
    container_id: str | None = None  # the platform's container of the current attempt (from the handle)
    # Multi-step publishing (aiposter.core.ports.Publisher): the publisher's last committed handle, when
    # the step now running began (set before the call, cleared with its outcome: set at start-up means
    # "interrupted: recover first"), when this attempt's first step began, and since when the platform
    # has kept it pending (bounded by retry.publish_max_wait_seconds).
    handle: dict | None = Field(default=None, sa_column=sa.Column(sa.JSON, nullable=True))
    step_started_at: datetime | None = None
    attempt_started_at: datetime | None = None
    pending_since: datetime | None = None
    published_at: datetime | None = None
    updated_at: datetime = Field(default_factory=utcnow)


class Pause(SQLModel, table=True):
    """An adapter or account that every replica must leave alone until ``until``, and why.

    ``scope`` names what is paused: ``captioner:openai``, ``source:google_drive``,
    ``destination:instagram``, ``connection:12``. Posts and targets it holds name it in ``paused_by``, so
    lifting it (deleting the row) releases them at once. ``fingerprint``: the configuration the fault was
    seen with; a replica whose configuration differs lifts the pause. ``probe_*``: after ``until`` one
    post at a time may try (half-open); its success lifts the pause."""

    __tablename__ = "pause"
    id: int | None = Field(default=None, primary_key=True)
    scope: str = Field(sa_column=sa.Column(sa.String(200), nullable=False, unique=True))
    connection_id: int | None = _fk("connection.id", nullable=True, index=False)  # gone with the account
    until: datetime
    code: str = ""
    reason: str = _text(nullable=False)
    failures: int = 1
    fingerprint: str | None = None
    probe_owner: str | None = None
    probe_expires_at: datetime | None = None
    created_at: datetime = Field(default_factory=utcnow)
    updated_at: datetime = Field(default_factory=utcnow)


class PostEvent(SQLModel, table=True):
    """Append-only history: each transition of a post or target with its reason."""

    __tablename__ = "post_event"
    id: int | None = Field(default=None, primary_key=True)
    post_id: int = _fk("post.id")
    target_id: int | None = Field(default=None, nullable=True)
    at: datetime = Field(default_factory=utcnow)
    state: str
    message: str = _text(nullable=False)
    actor: str | None = None  # who did it, for actions by people (review, retry); None: the pipeline


class OAuthState(SQLModel, table=True):
    """A pending OAuth authorization: single-use, short-lived, bound to the user who started it."""

    __tablename__ = "oauth_state"
    id: int | None = Field(default=None, primary_key=True)
    user_id: int = _fk("user_account.id")
    provider: str
    state_hash: str = Field(sa_column=sa.Column(sa.String(64), nullable=False, unique=True))
    code_verifier: str | None = _text()  # PKCE verifier, encrypted like a credential
    # SHA-256 of the nonce in the HttpOnly cookie of the browser that started the flow: the callback links
    # accounts only for that browser (no login CSRF through a shared or leaked authorization link).
    browser_hash: str | None = Field(default=None, sa_column=sa.Column(sa.String(64), nullable=True))
    created_at: datetime = Field(default_factory=utcnow)
    expires_at: datetime


class MetaGrant(SQLModel, table=True):
    """The Facebook Pages or Instagram accounts one Facebook Login granted, waiting for the user to pick
    which to use: short-lived, bound to the user, deleted once they choose (or by housekeeping once
    expired). ``candidates`` is ciphertext (JSON with each account's Page token), bound to this row."""

    __tablename__ = "meta_grant"
    # Ids never come back (SQLite reuses the highest deleted rowid otherwise): a link to a replaced or
    # used choice is 404, never another choice.
    __table_args__ = {"sqlite_autoincrement": True}
    id: int | None = Field(default=None, primary_key=True)
    user_id: int = _fk("user_account.id")
    provider: str  # facebook | instagram
    candidates: str | None = _text()
    created_at: datetime = Field(default_factory=utcnow)
    expires_at: datetime


class RateLimit(SQLModel, table=True):
    """Attempts per key in a fixed window (password guesses per client address, per account...).

    Incremented with one atomic upsert *before* the guarded check runs, so parallel requests and replicas
    cannot exceed the limit. Keys are stored as SHA-256: no addresses or emails in this table."""

    __tablename__ = "rate_limit"
    key_hash: str = Field(sa_column=sa.Column(sa.String(64), primary_key=True))
    window_start: float = Field(sa_column=sa.Column(sa.Float, nullable=False))  # epoch seconds
    count: int = Field(sa_column=sa.Column(sa.Integer, nullable=False))


class AuditEvent(SQLModel, table=True):
    """Who did what, when, from where: logins, user administration, connections, exports, deletions.

    No foreign keys on purpose: a row naming someone else as well (an admin who deleted a user) outlives the
    deleted user, with their email erased; rows naming only the deleted user go with them."""

    __tablename__ = "audit_event"
    id: int | None = Field(default=None, primary_key=True)
    at: datetime = Field(default_factory=utcnow, index=True)
    action: str = Field(sa_column=sa.Column(sa.String(50), nullable=False))
    actor_id: int | None = Field(default=None, sa_column=sa.Column(sa.Integer, nullable=True, index=True))
    actor_email: str | None = Field(default=None, sa_column=sa.Column(sa.String(320), nullable=True))
    subject_id: int | None = Field(default=None, sa_column=sa.Column(sa.Integer, nullable=True, index=True))
    subject_email: str | None = Field(default=None, sa_column=sa.Column(sa.String(320), nullable=True))
    client: str = Field(default="", sa_column=sa.Column(sa.String(200), nullable=False))
    detail: str = _text(nullable=False)


class NotifyChannel(SQLModel, table=True):
    """One of a user's notification receivers: an Apprise URL, encrypted (it carries tokens/passwords)."""

    __tablename__ = "notify_channel"
    id: int | None = Field(default=None, primary_key=True)
    user_id: int = _fk("user_account.id")
    label: str = Field(default="", sa_column=sa.Column(sa.String(100), nullable=False, server_default=""))
    url: str = Field(sa_column=sa.Column(sa.Text, nullable=False))  # ciphertext from aiposter.crypto
    created_at: datetime = Field(default_factory=utcnow)


class Notification(SQLModel, table=True):
    """Something to tell a user, queued in the database (the pipeline only inserts; the daemon sends).

    ``dedup_key`` is unique per user, so the same event reported by several workers or replicas, or again
    on a retry, is queued once. Everything pending for a user goes out as one message (a digest)."""

    __tablename__ = "notification"
    __table_args__ = (sa.UniqueConstraint("user_id", "dedup_key"),
                      sa.Index("ix_notification_pending", "status", "user_id"))
    id: int | None = Field(default=None, primary_key=True)
    user_id: int = _fk("user_account.id", index=False)
    kind: str = Field(sa_column=sa.Column(sa.String(30), nullable=False))  # failed | partial | reauth | quota | review
    dedup_key: str = Field(sa_column=sa.Column(sa.String(200), nullable=False))
    title: str = Field(default="", sa_column=sa.Column(sa.String(250), nullable=False))
    body: str = _text(nullable=False)
    status: str = Field(default="pending", sa_column=sa.Column(sa.String(20), nullable=False))  # pending|sent|failed
    attempts: int = 0
    lease_owner: str | None = None
    lease_expires_at: datetime | None = None
    last_error: str | None = _text()
    created_at: datetime = Field(default_factory=utcnow)
    sent_at: datetime | None = None


class DriveFeed(SQLModel, table=True):
    """One Drive connection's change feed: its page token, when it is next due, and its lease.

    Drive reports every change of an account after a page token, so the unit of polling is the connection,
    not the watch: one row per Drive connection that has watches, claimed like a watch (conditional UPDATE
    with a lease; ``SKIP LOCKED`` on PostgreSQL). ``page_token`` is stored only after the changes it covers
    were committed as source files and posts, so a crash re-reads them (and the per-watch records make the
    re-read post nothing twice)."""

    __tablename__ = "drive_feed"
    id: int | None = Field(default=None, primary_key=True)
    connection_id: int = Field(sa_column=sa.Column(sa.Integer, sa.ForeignKey("connection.id", ondelete="CASCADE"),
                                                   nullable=False, unique=True))
    page_token: str | None = _text()
    next_poll_at: datetime = Field(default_factory=utcnow)
    last_poll_at: datetime | None = None
    last_error: str | None = _text()
    requests: int = 0  # Drive requests spent by the last poll (one when idle)
    lease_owner: str | None = None
    lease_expires_at: datetime | None = None
    created_at: datetime = Field(default_factory=utcnow)


class DrivePushChannel(SQLModel, table=True):
    """A ``changes.watch`` channel of one Drive connection. ``token`` (the secret Google echoes in every
    notification) is encrypted like a credential."""

    __tablename__ = "drive_push_channel"
    id: int | None = Field(default=None, primary_key=True)
    connection_id: int = _fk("connection.id")
    channel_id: str = Field(sa_column=sa.Column(sa.String(64), nullable=False, unique=True))
    resource_id: str = ""
    token: str = _text(nullable=False)
    address: str = _text(nullable=False)
    expires_at: datetime
    created_at: datetime = Field(default_factory=utcnow)
