"""OAuth with each provider: the URL to send the user to, and the code exchange when they come back.

* ``google_drive``: google-auth-oauthlib's web-server Flow with PKCE (S256), offline access, the single
  scope ``drive.readonly``; the account is named from Drive's ``about`` resource.
* ``facebook`` / ``instagram``: Facebook Login on the Meta app. The code becomes a long-lived user token,
  then one account per Page (``facebook``) or per Instagram professional account linked to a Page
  (``instagram``, published with that Page's token, which does not expire). When there are several, the
  user picks which become connections (:mod:`aiposter.services.grants`).
* ``threads``: Threads Login. The code becomes a long-lived (60-day) user token.

Nothing here touches the database; :mod:`aiposter.services.connections` stores what comes back.
"""

from __future__ import annotations

import secrets
from dataclasses import dataclass
from datetime import datetime, timedelta
from urllib.parse import urlencode

import httpx

from aiposter.config import Config
from aiposter.core import faults
from aiposter.core.models import utcnow
from aiposter.services import Invalid, ServiceError

PROVIDERS = ("google_drive", "facebook", "instagram", "threads")
DRIVE_SCOPE = "https://www.googleapis.com/auth/drive.readonly"
SCOPES = {
    "google_drive": [DRIVE_SCOPE],
    "facebook": ["pages_show_list", "pages_manage_posts", "pages_read_engagement"],
    "instagram": ["pages_show_list", "pages_read_engagement", "instagram_basic", "instagram_content_publish"],
    "threads": ["threads_basic", "threads_content_publish"],
}


class OAuthFailed(ServiceError):
    """The provider refused the code or answered something unusable."""

    code = "oauth_failed"


@dataclass
class Account:
    """One external account the user authorized, with the secrets to store encrypted."""

    account_id: str
    account_name: str
    credentials: dict
    scopes: list[str]
    expires_at: datetime | None = None


def check_configured(cfg: Config, provider: str) -> None:
    if provider not in PROVIDERS:
        raise Invalid(f"unknown provider {provider!r} (known: {', '.join(PROVIDERS)})", field="provider")
    o = cfg.oauth
    app_id, secret, section = {
        "google_drive": (o.google.client_id, o.google.client_secret, "oauth.google"),
        "threads": (o.threads.app_id, o.threads.app_secret, "oauth.threads"),
    }.get(provider, (o.meta.app_id, o.meta.app_secret, "oauth.meta"))
    if not app_id or secret is None or not secret.get_secret_value():
        raise Invalid(f"{provider} is not set up on this server: the operator must configure [{section}]",
                      field="provider")


def new_code_verifier() -> str:
    return secrets.token_urlsafe(64)  # 86 characters of the unreserved set, as RFC 7636 asks


def authorize_url(cfg: Config, provider: str, redirect_uri: str, state: str,
                  code_verifier: str | None) -> str:
    check_configured(cfg, provider)
    if provider == "google_drive":
        url, _ = _google_flow(cfg, redirect_uri, state, code_verifier).authorization_url(prompt="consent")
        return url
    o = cfg.oauth.threads if provider == "threads" else cfg.oauth.meta
    params = {"client_id": o.app_id, "redirect_uri": redirect_uri, "state": state, "response_type": "code",
              "scope": ",".join(SCOPES[provider])}
    return f"{o.authorize_url}?{urlencode(params)}"


def exchange(cfg: Config, provider: str, code: str, redirect_uri: str,
             code_verifier: str | None) -> list[Account]:
    check_configured(cfg, provider)
    if provider == "google_drive":
        return [_google_exchange(cfg, code, redirect_uri, code_verifier)]
    with httpx.Client(timeout=cfg.oauth.timeout_seconds) as http:
        if provider == "threads":
            return [_threads_exchange(cfg, http, code, redirect_uri)]
        return _meta_exchange(cfg, http, provider, code, redirect_uri)


# --------------------------------------------------------------------------- Google


def _google_flow(cfg: Config, redirect_uri: str, state: str | None, code_verifier: str | None):
    from google_auth_oauthlib.flow import Flow

    g = cfg.oauth.google
    client = {"web": {"client_id": g.client_id, "client_secret": g.client_secret.get_secret_value(),
                      "auth_uri": g.auth_uri, "token_uri": g.token_uri, "redirect_uris": [redirect_uri]}}
    return Flow.from_client_config(client, scopes=SCOPES["google_drive"], redirect_uri=redirect_uri,
                                   state=state, code_verifier=code_verifier, autogenerate_code_verifier=False)


def _google_exchange(cfg: Config, code: str, redirect_uri: str, code_verifier: str | None) -> Account:
    flow = _google_flow(cfg, redirect_uri, None, code_verifier)
    try:
        flow.fetch_token(code=code, timeout=cfg.oauth.timeout_seconds)
    except Exception as exc:  # noqa: BLE001 - oauthlib and requests raise many types; all mean "no token"
        raise OAuthFailed(f"Google refused the authorization code: {_short(exc)}") from None
    creds = flow.credentials
    granted = (flow.oauth2session.token.get("scope") or DRIVE_SCOPE)
    granted = granted.split() if isinstance(granted, str) else list(granted)
    if DRIVE_SCOPE not in granted:
        raise OAuthFailed("Google did not grant read access to Drive (drive.readonly); connect again and "
                          "allow it")
    if not creds.refresh_token:
        raise OAuthFailed("Google sent no refresh token; remove the app's access in your Google account, "
                          "then connect again")
    with httpx.Client(timeout=cfg.oauth.timeout_seconds) as http:
        about = _get_json(http, f"{cfg.oauth.google.drive_api_url}/about", "Google Drive",
                          params={"fields": "user(displayName,emailAddress,permissionId)"},
                          headers={"Authorization": f"Bearer {creds.token}"}).get("user") or {}
    # The access token's one-hour expiry stays inside the secrets (housekeeping refreshes it); the
    # connection itself does not expire while the refresh token is good, so Account.expires_at is None.
    expiry = creds.expiry.replace(tzinfo=utcnow().tzinfo) if creds.expiry else None
    return Account(
        account_id=str(about.get("permissionId") or about.get("emailAddress") or ""),
        account_name=about.get("emailAddress") or about.get("displayName") or "Google Drive",
        credentials={"token": creds.token, "refresh_token": creds.refresh_token, "token_uri": creds.token_uri,
                     "client_id": creds.client_id, "scopes": granted,
                     "expiry": expiry.isoformat() if expiry else None},
        scopes=granted, expires_at=None)


# --------------------------------------------------------------------------- Meta: Facebook Pages, Instagram


def _meta_exchange(cfg: Config, http: httpx.Client, provider: str, code: str,
                   redirect_uri: str) -> list[Account]:
    m = cfg.oauth.meta
    secret = m.app_secret.get_secret_value()
    short = _get_json(http, f"{m.graph_base_url}/oauth/access_token", "Facebook", params={
        "client_id": m.app_id, "client_secret": secret, "redirect_uri": redirect_uri, "code": code})
    long = _get_json(http, f"{m.graph_base_url}/oauth/access_token", "Facebook", params={
        "grant_type": "fb_exchange_token", "client_id": m.app_id, "client_secret": secret,
        "fb_exchange_token": _token(short, "Facebook")})
    user_token = _token(long, "Facebook")
    # The Pages this login can publish to, through the same Graph client as publishing (appsecret_proof on
    # the call, paging followed, Graph errors classified); a Page where the user has no CREATE_CONTENT (or
    # MANAGE) task is not offered: posting to it would fail.
    from aiposter.core.errors import PublishError
    from aiposter.publishers.meta.accounts import list_pages
    from aiposter.publishers.meta.graph import GraphClient

    try:
        pages = list_pages(GraphClient(m.graph_base_url, "", user_token, app_secret=secret, http=http))
    except PublishError as exc:
        raise OAuthFailed(f"the Pages of this login could not be listed: {exc}") from None
    usable = [p for p in pages if p.can_publish]
    accounts: list[Account] = []
    for p in usable:
        if provider == "facebook":
            accounts.append(Account(p.page_id, p.name, {"access_token": p.access_token}, SCOPES[provider]))
        elif p.instagram_id:
            accounts.append(Account(p.instagram_id, p.instagram_username or p.name,
                                    {"access_token": p.access_token, "page_id": p.page_id}, SCOPES[provider]))
    if not accounts and len(usable) < len(pages):
        names = ", ".join(p.name or p.page_id for p in pages if not p.can_publish)
        raise OAuthFailed(f"you cannot create content on the Pages shared with this app ({names}): a Page admin "
                          "must give you the Create content task, then connect again")
    if not accounts:
        what = ("Facebook Pages" if provider == "facebook"
                else "Instagram professional accounts linked to a Page")
        raise OAuthFailed(f"no {what} were shared with this app; connect again and select at least one")
    return accounts


# --------------------------------------------------------------------------- Threads


def _threads_exchange(cfg: Config, http: httpx.Client, code: str, redirect_uri: str) -> Account:
    t = cfg.oauth.threads
    secret = t.app_secret.get_secret_value()
    try:
        r = http.post(f"{t.graph_base_url}/oauth/access_token", data={
            "client_id": t.app_id, "client_secret": secret, "grant_type": "authorization_code",
            "redirect_uri": redirect_uri, "code": code})
    except httpx.HTTPError as exc:
        raise OAuthFailed(_unreachable(exc, "Threads", f"{t.graph_base_url}/oauth/access_token")) from None
    short = _json_or_fail(r, "Threads")
    long = _get_json(http, f"{t.graph_base_url}/access_token", "Threads", params={
        "grant_type": "th_exchange_token", "client_secret": secret, "access_token": _token(short, "Threads")})
    token = _token(long, "Threads")
    me = _get_json(http, f"{t.graph_base_url}/v1.0/me", "Threads",
                   params={"fields": "id,username", "access_token": token})
    user_id = str(me.get("id") or short.get("user_id") or "")
    if not user_id:
        raise OAuthFailed("Threads did not say which account was connected")
    expires = utcnow() + timedelta(seconds=int(long["expires_in"])) if long.get("expires_in") else None
    return Account(user_id, me.get("username", ""), {"access_token": token, "user_id": user_id},
                   SCOPES["threads"], expires_at=expires)


# --------------------------------------------------------------------------- HTTP helpers


def _get_json(http: httpx.Client, url: str, who: str, params: dict | None = None,
              headers: dict | None = None) -> dict:
    try:
        r = http.get(url, params=params, headers=headers)
    except httpx.HTTPError as exc:
        raise OAuthFailed(_unreachable(exc, who, url)) from None
    return _json_or_fail(r, who)


def _unreachable(exc: Exception, who: str, url: str) -> str:
    fault = faults.classify_exception(exc, url=url.split("?")[0])
    return f"{who} could not be reached: {fault.message if fault else _short(exc)}"


def _json_or_fail(r: httpx.Response, who: str) -> dict:
    """The JSON object of a 200 answer, or OAuthFailed saying, through the shared classifier, whether
    trying again later can help (an outage, a rate limit) or the provider refused."""
    try:
        body = r.json()
    except ValueError:
        body = None
    if r.status_code == 200 and isinstance(body, dict):
        return body
    fault = faults.classify_http(r.status_code, r.headers, body if body is not None else r.text)
    detail = fault.message.split(": ", 1)[1] if ": " in fault.message else fault.message
    if fault.kind in (faults.TRANSIENT, faults.RATE_LIMITED):
        wait = f" (it asked to wait {fault.retry_after:.0f} s)" if fault.retry_after else ""
        raise OAuthFailed(f"{who} is unavailable right now{wait}: {detail[:300]}; try connecting again later")
    if fault.kind == faults.CONFIG:
        raise OAuthFailed(f"{who} refused the request: {detail[:300]} (the server's [oauth] settings may be "
                          "wrong; tell the operator)")
    raise OAuthFailed(f"{who} refused the request: {detail[:300]}")


def _token(body: dict, who: str) -> str:
    token = body.get("access_token")
    if not isinstance(token, str) or not token:
        raise OAuthFailed(f"{who} answered without an access token")
    return token


def _short(exc: Exception) -> str:
    return (str(exc).strip().splitlines() or [exc.__class__.__name__])[0][:300]
