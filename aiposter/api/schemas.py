"""Request and response models: the API's contract, published at /openapi.json.

Strings refuse NUL (PostgreSQL cannot store it) and have a maximum length; integers that name rows fit a
32-bit column. Request bodies forbid unknown fields, so a typo is a validation error that names the field.
"""

from __future__ import annotations

from datetime import datetime
from typing import Annotated, Any, Literal

from fastapi import Path
from pydantic import BaseModel, ConfigDict, Field, StringConstraints

from aiposter.core import registry, states

MAX_ID = 2**31 - 1


def Text(max_length: int, min_length: int = 0):  # noqa: N802 - a type factory, used like a type
    return Annotated[str, StringConstraints(min_length=min_length, max_length=max_length,
                                            pattern=r"^[^\x00]*$")]


RowId = Annotated[int, Field(ge=1, le=MAX_ID)]
PathId = Annotated[int, Path(ge=1, le=MAX_ID)]
Provider = Literal["google_drive", "facebook", "instagram", "threads"]
PostState = Literal[states.POST_STATES]  # type: ignore[valid-type]
SourceName = Literal[tuple(registry.SOURCES)]  # type: ignore[valid-type]  # the registry's sources


class Request(BaseModel):
    model_config = ConfigDict(extra="forbid")


# --------------------------------------------------------------------------- errors


class ErrorBody(BaseModel):
    code: str = Field(description="Stable machine-readable code: unauthorized, forbidden, not_found, "
                                  "conflict, validation_error, rate_limited, oauth_failed, internal_error...")
    message: str
    field: str | None = Field(None, description="The request field at fault, for validation errors.")


class ErrorResponse(BaseModel):
    error: ErrorBody


# --------------------------------------------------------------------------- auth and users


class LoginRequest(Request):
    email: Text(320, 1)
    password: Text(1024, 1)


class UserOut(BaseModel):
    model_config = ConfigDict(from_attributes=True)

    id: int
    email: str
    display_name: str
    role: Literal["user", "admin"]
    disabled: bool
    processing_paused: bool
    brand_voice: str
    default_hashtags: list[str]
    created_at: datetime


class LoginResponse(BaseModel):
    token: str = Field(description="Send as `Authorization: Bearer <token>`. Shown once; stored only hashed.")
    token_type: Literal["bearer"] = "bearer"
    expires_at: datetime
    user: UserOut


class ProfileUpdate(Request):
    display_name: Text(200, 1) | None = None
    brand_voice: Text(4000) | None = None
    default_hashtags: list[Text(100)] | None = Field(None, max_length=30)


class PasswordChange(Request):
    current_password: Text(1024, 1)
    new_password: Text(1024, 1)


class PasswordConfirm(Request):
    password: Text(1024, 1)


class UserCreate(Request):
    email: Text(320, 1)
    password: Text(1024, 1) | None = Field(None, description="Omit for an account that cannot log in.")
    display_name: Text(200) = ""
    role: Literal["user", "admin"] = "user"


class Done(BaseModel):
    ok: Literal[True] = True
    detail: str = ""


class Deleted(BaseModel):
    deleted: Literal[True] = True
    posts: int = Field(0, description="Post records removed with it.")


# --------------------------------------------------------------------------- connections


class ConnectionOut(BaseModel):
    id: int
    provider: Provider
    account_id: str
    account_name: str
    scopes: list[str]
    status: str
    last_error: str | None
    token_expires_at: datetime | None
    created_at: datetime
    updated_at: datetime


class OAuthStart(BaseModel):
    provider: Provider
    authorize_url: str = Field(description="Send the user's browser here.")
    state: str
    redirect_uri: str = Field(description="Where the provider sends the browser back (register it there).")
    expires_at: datetime


class OAuthFinish(Request):
    state: Text(200, 1)
    code: Text(4096, 1)


class GrantCandidateOut(BaseModel):
    account_id: str = Field(description="The Facebook Page's id, or the Instagram account's.")
    account_name: str
    page_id: str = Field(description="The Facebook Page (for an Instagram account: the Page it is linked to).")
    connected: bool = Field(description="Already connected: pre-selected; choosing it again refreshes its token "
                                        "and makes it active. Leaving it out does not disconnect it.")
    connection_id: int | None
    connection_status: str | None


class GrantOut(BaseModel):
    """Accounts a Facebook Login granted, waiting for the user to pick which to use (no tokens shown)."""

    id: int
    provider: Literal["facebook", "instagram"]
    expires_at: datetime = Field(description="After this the choice is gone (410) and its tokens are deleted.")
    candidates: list[GrantCandidateOut]


class PendingOut(BaseModel):
    pending: GrantOut = Field(description="Several accounts were granted and none is connected yet: pick with "
                                          "`POST /api/v1/connections/grants/{id}/select`.")


class GrantSelect(Request):
    account_ids: list[Text(100, 1)] = Field(min_length=1, max_length=2000,
                                            description="The `account_id`s of the candidates to connect.")


# --------------------------------------------------------------------------- watches


class WatchFields(Request):
    name: Text(200) | None = None
    source: SourceName | None = None
    source_connection_id: RowId | None = None
    interval_seconds: Annotated[int, Field(ge=5, le=31 * 86400)] | None = None
    targets: list[Text(100)] | None = Field(None, max_length=20,
                                            description='"outbox", or "facebook:<connection id>", ...')
    prompt_template: Text(20000) | None = None
    captioner: Text(50) | None = Field(None, description='"" for the server default.')
    backfill: bool | None = None
    maximum_age_hours: Annotated[float, Field(ge=0, le=100_000)] | None = None
    min_spacing_seconds: Annotated[int, Field(ge=0, le=31 * 86400)] | None = None
    approval: Literal["auto", "review"] | None = Field(
        None, description="review: captioned posts wait for the owner's approval before publishing.")
    review_ttl_hours: Annotated[float, Field(gt=0, le=24 * 365)] | None = Field(
        None, description="An unreviewed post expires (and its image is deleted) after this many hours.")
    schedule_tz: Text(64) | None = Field(None, description='IANA time zone of the schedule, e.g. '
                                                           '"Europe/Berlin"; "" clears (UTC).')
    schedule_windows: Text(1000) | None = Field(
        None, description='Weekly posting windows, e.g. "mon-fri 08:30-12:00, sat 10:00-14:00"; "" clears.')
    daily_cap: Annotated[int, Field(ge=0, le=1000)] | None = Field(
        None, description="At most this many posts per destination per local day (0: no cap).")
    fit: Literal["pad", "crop"] | None = Field(
        None, description="An image outside a destination's aspect range (Instagram 4:5 to 1.91:1, Threads "
                          "1:10 to 10:1) goes there padded onto a blurred copy of itself, or cropped about "
                          "its centre. Facebook gets the original.")
    enabled: bool | None = None
    include_subfolders: bool | None = Field(None, description="Drive watches: also files in subfolders.")
    image_types: list[Text(100)] | None = Field(
        None, max_length=20, description='The image types it posts: MIME types or names ("jpeg", "png", "webp", '
        '"heic", "gif", "tiff"). [] : the source\'s default (Drive: JPEG, PNG, WebP, HEIC/HEIF; a local folder: '
        'any image the server decodes).')


class WatchCreate(WatchFields):
    folder: Text(4096, 1) = Field(description="A local path under the server's sources.local_roots, or a "
                                              "Drive folder id or pasted Drive folder link.")


class WatchUpdate(WatchFields):
    folder: Text(4096, 1) | None = None


class WatchOut(BaseModel):
    id: int
    name: str
    source: str
    source_connection_id: int | None
    folder: str
    folder_name: str
    interval_seconds: int
    targets: list[str]
    prompt_template: str | None
    captioner: str | None
    backfill: bool
    maximum_age_hours: float
    min_spacing_seconds: int
    approval: Literal["auto", "review"]
    review_ttl_hours: float
    schedule_tz: str | None
    schedule_windows: str | None
    daily_cap: int
    fit: Literal["pad", "crop"]
    enabled: bool
    status: Literal["active", "paused", "error", "waiting"] = Field(
        description="error: the last poll failed (a missing folder, or one that escaped the allowed roots); "
                    "last_poll_error says why, and the folder is not read until it is fixed. waiting: its "
                    "account needs reconnecting or the source asked to back off (last_poll_error says which).")
    baseline_done: bool
    include_subfolders: bool = False
    image_types: list[str] | None = Field(None, description="MIME types; null: the source's default.")
    last_poll_at: datetime | None
    last_poll_error: str | None
    next_poll_at: datetime | None
    created_at: datetime


class DriveFolderOut(BaseModel):
    id: str
    name: str
    kind: Literal["folder", "shared_drive"]
    drive_id: str | None
    parent: str | None


class DriveFolderPage(BaseModel):
    folders: list[DriveFolderOut]
    next_page_token: str | None


# --------------------------------------------------------------------------- posts


class PostOut(BaseModel):
    id: int
    watch_id: int
    file_name: str
    folder_name: str
    source_ref: str
    status: PostState
    last_error: str | None
    waiting_for: str | None = Field(None, description="Why an unfinished post is not moving right now.")
    next_attempt_at: datetime | None
    created_at: datetime
    finished_at: datetime | None


class PostPage(BaseModel):
    items: list[PostOut]
    next_cursor: int | None = Field(description="Pass as `cursor` for the next (older) page; null at "
                                                "the end.")


class PostTargetOut(BaseModel):
    id: int
    platform: str
    connection_id: int | None
    status: str
    attempts: int
    platform_post_id: str | None
    url: str | None
    last_error: str | None
    published_at: datetime | None
    caption: str = Field("", description="The text this target publishes (the owner's edit if any).")
    approved_by: str | None = None


class PostEventOut(BaseModel):
    at: datetime
    state: str
    target_id: int | None
    message: str
    actor: str | None = Field(None, description="Who did it (review actions, ...); null: the pipeline.")


class ReviewTargetOut(BaseModel):
    id: int
    platform: str
    status: str
    caption: str
    edited: bool
    approved_by: str | None
    length: int = Field(description="The caption's length as the platform counts it.")
    max_length: int


class ReviewOut(BaseModel):
    post_id: int
    status: PostState
    file_name: str
    review_expires_at: datetime | None
    image_url: str | None = Field(description="Owner-only preview of the prepared image, while in flight.")
    alt_text: str
    hashtags: list[str]
    usage: dict[str, Any]
    targets: list[ReviewTargetOut]


class ReviewEdit(Request):
    captions: dict[Text(20, 1), Text(70000)] | None = Field(
        None, max_length=20, description="New caption per target id (or per platform, for every target on it).")
    alt_text: Text(5000) | None = None


class ReviewApprove(Request):
    target_ids: list[RowId] | None = Field(None, max_length=20, description="Approve only these targets (the "
                                                                            "others are skipped); all if omitted.")


class ReviewReject(Request):
    reason: Text(1000) = ""


class ReviewRegenerate(Request):
    instruction: Text(500) = Field("", description='What to change, e.g. "shorter, no emoji".')


class ImageInfo(BaseModel):
    width: int | None
    height: int | None
    bytes: int | None


class PauseOut(BaseModel):
    scope: str = Field(description="What is paused: captioner:NAME, source:NAME, destination:PLATFORM or "
                                   "connection:ID.")
    until: datetime
    code: str = Field(description="The fault's class: rate_limited, server_error, auth, quota, config...")
    reason: str
    failures: int = Field(description="Faults in a row; each repeat doubles the wait, up to the cap.")
    probing: bool = Field(description="The pause has ended and one post is testing the adapter.")
    held: int = Field(description="Unfinished posts and targets it holds.")
    since: datetime


class PostDetail(PostOut):
    description: str
    capture_time: datetime | None
    source_time: datetime | None
    captioner: str | None
    captions: dict[str, str]
    hashtags: list[str]
    alt_text: str
    usage: dict[str, Any]
    review_expires_at: datetime | None = None
    skip_schedule: bool = False
    image: ImageInfo
    targets: list[PostTargetOut]
    events: list[PostEventOut]


# --------------------------------------------------------------------------- privacy and operations


class ExportDocument(BaseModel):
    format: str
    exported_at: datetime
    profile: dict[str, Any]
    connections: list[ConnectionOut]
    watches: list[dict[str, Any]]
    notifications: dict[str, Any] = Field(description="Notification URLs (secrets masked) and recent "
                                                      "notifications.")
    posts: list[dict[str, Any]]


class Health(BaseModel):
    status: Literal["ok"] = "ok"


class Readiness(BaseModel):
    ready: bool
    database: str
    scheduler: Literal["running", "stopped", "not_in_this_process"]
    pending_migrations: list[str]


# --------------------------------------------------------------------------- audit


class AuditEventOut(BaseModel):
    id: int
    at: datetime
    action: str = Field(description="login.succeeded, login.failed, login.locked, password.changed, "
                                    "password.check_failed, password.locked, user.created, user.password_set, "
                                    "user.disabled, user.enabled, user.deleted, account.deleted, "
                                    "connection.added, connection.removed, data.exported")
    actor_id: int | None = Field(description="Who acted; null for the operator on the CLI, or an anonymous "
                                             "login attempt.")
    actor_email: str | None
    subject_id: int | None = Field(description="The user acted on, if any.")
    subject_email: str | None
    client: str = Field(description='The client address, or "cli".')
    detail: str


class AuditPage(BaseModel):
    items: list[AuditEventOut]
    next_cursor: int | None = Field(description="Pass as `cursor` for the next (older) page; null at the end.")


# --------------------------------------------------------------------------- notifications


class NotifyChannelIn(Request):
    url: Text(2000, 1) = Field(description="An Apprise URL, e.g. ntfy://topic, tgram://token/chat, json://host/path.")
    label: Text(100) = ""


class NotifyChannelOut(BaseModel):
    id: int
    label: str
    url: str = Field(description="Masked: secrets are never shown again.")
    created_at: datetime


class NotifyTestOut(BaseModel):
    ok: bool
    error: str | None


class NotificationOut(BaseModel):
    id: int
    kind: str
    title: str
    body: str
    status: Literal["pending", "sent", "failed"]
    attempts: int
    last_error: str | None
    created_at: datetime
    sent_at: datetime | None
