"""The Meta destinations as the pipeline sees them: registry ``build(deps)``, the port's types, the
credential refreshers, and the endpoints from config.

The registry builds one adapter per worker thread and *platform*; a target names its connection, so
:class:`MetaDestination` keeps one :class:`GraphClient` and platform step object per connection (rebuilt
when the stored token changes: a refresh or a reconnect). Everything platform-specific stays in the
phase-1 modules; this file only translates:

* ``claimed=`` reads the post ids other targets of the same connection recorded (two posts with the
  same caption must never adopt each other's post on recovery);
* after a successful step, Meta's usage headers (``GraphClient.backoff_seconds``) are remembered so the
  next step of the same connection is refused locally (``rate_limited``) and the pipeline pauses it.
"""

from __future__ import annotations

import re
import threading
from datetime import UTC, datetime, timedelta

from sqlmodel import select

from aiposter.core import ports
from aiposter.core.errors import PublishError
from aiposter.publishers.meta import accounts, tokens
from aiposter.publishers.meta.facebook import FacebookPage
from aiposter.publishers.meta.graph import GraphClient, Timeouts
from aiposter.publishers.meta.instagram import InstagramAccount
from aiposter.publishers.meta.steps import probe_media_url
from aiposter.publishers.meta.threads import ThreadsAccount

PAGE_CHECK_EVERY = timedelta(hours=24)  # debug_token on Page tokens, by housekeeping
CLAIMED_LOOKBACK = timedelta(days=3)   # recovery looks back minutes; ids older than this cannot collide
_VERSION = re.compile(r"^v\d+(\.\d+)?$")


# --------------------------------------------------------------------------- endpoints from config


def graph_endpoint(cfg) -> tuple[str, str]:
    """(Graph root URL, version): ``[publishers.meta]`` when set, else split from ``[oauth.meta]
    graph_base_url`` (``https://graph.facebook.com/v21.0`` → root and ``v21.0``)."""
    m = cfg.publishers.meta
    base = cfg.oauth.meta.graph_base_url.rstrip("/")
    head, _, last = base.rpartition("/")
    root, version = (head, last) if _VERSION.match(last) else (base, "v21.0")
    return (m.graph_url.rstrip("/") or root), (m.graph_version or version)


def threads_endpoint(cfg) -> tuple[str, str]:
    m = cfg.publishers.meta
    return (m.threads_url.rstrip("/") or cfg.oauth.threads.graph_base_url.rstrip("/")), m.threads_version


def _secret(value) -> str | None:
    return value.get_secret_value() if value is not None else None


def timeouts(cfg) -> Timeouts:
    m = cfg.publishers.meta
    return Timeouts(connect=m.connect_timeout_seconds, read=m.read_timeout_seconds)


def client_for(cfg, platform: str, token: str) -> GraphClient:
    """A GraphClient for ``platform`` (facebook/instagram on the Graph host, threads on its own)."""
    m = cfg.publishers.meta
    if platform == "threads":
        root, version = threads_endpoint(cfg)
        secret, who = _secret(cfg.oauth.threads.app_secret), "Threads"
    else:
        root, version = graph_endpoint(cfg)
        secret, who = _secret(cfg.oauth.meta.app_secret), platform.capitalize()
    return GraphClient(root, version, token, app_secret=secret, who=who, timeouts=timeouts(cfg),
                       usage_threshold=m.usage_threshold_percent)


# --------------------------------------------------------------------------- the adapter


class MetaDestination:
    """One destination (``facebook``, ``instagram`` or ``threads``) for every connection of a worker."""

    def __init__(self, platform: str, deps):
        if deps.credentials is None:
            raise PublishError(f"{platform}: no credential store (no encryption key loaded)", permanent=True,
                               code="config")
        if platform != "threads" and not deps.cfg.oauth.meta.app_secret:
            raise PublishError("[oauth.meta] app_secret is not set: every Graph call is signed with it "
                               "(appsecret_proof)", code="config", retry_after=3600)
        self.platform = platform
        self.deps = deps
        self.cfg = deps.cfg
        self._steps: dict[int, tuple[str, object]] = {}
        self._lock = threading.Lock()

    # ------------------------------------------------------------------ per connection

    def _claimed(self, connection_id: int):
        engine = self.deps.credentials.engine

        def claimed() -> set[str]:
            from aiposter.core.models import PostTarget, utcnow
            from aiposter.db import session_scope
            since = utcnow() - CLAIMED_LOOKBACK
            with session_scope(engine) as s:
                rows = s.exec(select(PostTarget.platform_post_id).where(
                    PostTarget.connection_id == connection_id, PostTarget.platform == self.platform,
                    PostTarget.platform_post_id.is_not(None), PostTarget.updated_at >= since))
                return {str(r) for r in rows}
        return claimed

    def steps_for(self, connection_id: int | None, creds=None):
        """The step object of this connection; ``creds``: its credentials when the caller already read
        them (the pipeline does, with the target), else loaded here."""
        if connection_id is None:
            raise PublishError(f"the {self.platform} target names no connection; reconnect the account",
                               permanent=True, code="no_connection")
        if creds is None or creds.connection_id != connection_id:
            creds = self.deps.credentials.load(connection_id)
        token = str(creds.secrets.get("access_token") or "")
        if not token:
            raise PublishError(f"the {self.platform} account {creds.account_name} has no access token; "
                               "reconnect it", permanent=True, code="auth")
        with self._lock:
            known = self._steps.get(connection_id)
            if known is not None and known[0] == token:
                return known[1]
            if known is not None:
                known[1].client.close()
            m = self.cfg.publishers.meta
            client = client_for(self.cfg, self.platform, token)
            claimed = self._claimed(connection_id)
            probe = _probe(m.probe_timeout_seconds)
            if self.platform == "facebook":
                step = FacebookPage(client, creds.account_id, settle_seconds=m.facebook_settle_seconds,
                                    claimed=claimed)
            elif self.platform == "instagram":
                step = InstagramAccount(client, creds.account_id, poll_seconds=m.instagram_poll_seconds,
                                        max_poll_seconds=m.max_poll_seconds,
                                        max_wait_seconds=m.instagram_max_wait_seconds, probe=probe,
                                        claimed=claimed)
            else:
                step = ThreadsAccount(client, str(creds.secrets.get("user_id") or creds.account_id),
                                      poll_seconds=m.threads_poll_seconds, max_poll_seconds=m.max_poll_seconds,
                                      max_wait_seconds=m.threads_max_wait_seconds, probe=probe, claimed=claimed)
            self._steps[connection_id] = (token, step)
            return step

    # ------------------------------------------------------------------ the port

    def publish(self, req: ports.PublishRequest) -> ports.Published | ports.Pending:
        return self.steps_for(req.connection_id, req.credentials).publish(req)

    def recover(self, req: ports.PublishRequest) -> ports.Published | ports.Pending | None:
        return self.steps_for(req.connection_id, req.credentials).recover(req)

    def close(self) -> None:
        with self._lock:
            for _, step in self._steps.values():
                step.client.close()
            self._steps.clear()


def _probe(timeout: float):
    def probe(url, who):
        probe_media_url(url, who, timeout=timeout)
    return probe


def build_facebook(deps) -> MetaDestination:
    return MetaDestination("facebook", deps)


def build_instagram(deps) -> MetaDestination:
    return MetaDestination("instagram", deps)


def build_threads(deps) -> MetaDestination:
    return MetaDestination("threads", deps)


# --------------------------------------------------------------------------- tokens kept alive


def _parse(value) -> datetime | None:
    if not value:
        return None
    try:
        dt = datetime.fromisoformat(str(value).replace("Z", "+00:00"))
    except ValueError:
        return None
    return dt if dt.tzinfo else dt.replace(tzinfo=UTC)


def threads_due(secrets: dict, now: datetime) -> bool:
    """A day after the token was issued or last refreshed (Meta refuses younger ones), and then daily:
    a token refreshed as soon as allowed keeps ~59 days of margin."""
    expires = _parse(secrets.get("expires_at"))
    if expires is None:
        return True  # not known from the secrets: the refresher reads the connection's expiry
    return tokens.threads_refresh_state(expires, now=now, refreshed_at=_parse(secrets.get("refreshed_at"))) != "ok"


def refresh_threads(creds, cfg):
    """Housekeeping: a fresh 60-day Threads token. Refused (190) or already expired → ``auth``."""
    from aiposter.core.credentials import CredentialsError, Refreshed
    now = datetime.now(UTC)
    expires = _parse(creds.secrets.get("expires_at")) or creds.token_expires_at
    if expires is not None and expires.tzinfo is None:
        expires = expires.replace(tzinfo=UTC)
    state = tokens.threads_refresh_state(expires, now=now, refreshed_at=_parse(creds.secrets.get("refreshed_at")))
    if state == "expired":
        raise CredentialsError("the Threads token has expired; reconnect the account", permanent=True, code="auth")
    if state == "ok":  # too young to refresh (Meta refuses): remember the expiry, ask again tomorrow
        return Refreshed(dict(creds.secrets, expires_at=expires.isoformat() if expires else None))
    root, _ = threads_endpoint(cfg)
    try:
        fresh = tokens.refresh_threads_token(root, creds.secrets["access_token"],
                                             app_secret=_secret(cfg.oauth.threads.app_secret),
                                             timeouts=timeouts(cfg), now=now)
    except PublishError as exc:
        raise CredentialsError(f"Threads refused to refresh the token: {exc}", permanent=exc.code == "auth",
                               code=exc.code) from None
    secrets = dict(creds.secrets, access_token=fresh.access_token, refreshed_at=now.isoformat(),
                   expires_at=fresh.expires_at.isoformat() if fresh.expires_at else None)
    return Refreshed(secrets, expires_at=fresh.expires_at)


def check_page_token(creds, cfg):
    """Housekeeping: ``debug_token`` on a Page token (Facebook, Instagram). A problem → ``auth``."""
    from aiposter.core.credentials import CredentialsError, Refreshed
    m = cfg.oauth.meta
    if not m.app_id or not m.app_secret:
        raise CredentialsError("[oauth.meta] app_id/app_secret are not set; cannot check Page tokens",
                               code="config")
    root, version = graph_endpoint(cfg)
    page_id = str(creds.secrets.get("page_id") or creds.account_id) if creds.provider == "instagram" \
        else creds.account_id
    required = tokens.PAGE_PUBLISH_SCOPES if creds.provider == "facebook" else tokens.IG_PUBLISH_SCOPES
    try:
        info = tokens.debug_token(root, version, m.app_id, _secret(m.app_secret), creds.secrets["access_token"],
                                  timeouts=timeouts(cfg))
    except PublishError as exc:
        raise CredentialsError(f"Facebook could not check the token: {exc}", permanent=False,
                               code=exc.code if exc.code != "auth" else "config") from None
    problem = tokens.page_token_problem(info, page_id=page_id, app_id=m.app_id, required=required)
    if problem:
        raise CredentialsError(problem, permanent=True, code="auth")
    return Refreshed(dict(creds.secrets, checked_at=datetime.now(UTC).isoformat()))


def page_check_due(secrets: dict, now: datetime) -> bool:
    last = _parse(secrets.get("checked_at"))
    return last is None or now - last >= PAGE_CHECK_EVERY


# --------------------------------------------------------------------------- token import


def import_token(cfg, platform: str, token: str) -> accounts.ImportedAccount:
    """Check a token an operator already has against the API; what to store. PublishError if refused."""
    with client_for(cfg, platform, token) as client:
        if platform == "threads":
            return accounts.check_threads_token(client)
        if platform == "facebook":
            return accounts.check_page_token(client)
        if platform == "instagram":
            return accounts.check_instagram_token(client)
    raise ValueError(f"cannot import a token for {platform!r} (facebook, instagram or threads)")
