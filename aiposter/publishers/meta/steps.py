"""What a Meta publishing step takes and answers.

A step answers the port's own :class:`~aiposter.core.ports.Published` (done) or
:class:`~aiposter.core.ports.Pending` (look again after ``wait_seconds`` with this ``handle``), or raises
:class:`~aiposter.core.errors.PublishError`.

A request is duck-typed: anything with the attributes of :class:`StepRequest` works, so the port's own
request object can be passed straight in.
"""

from __future__ import annotations

import threading
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path

import httpx

from aiposter.core.errors import PublishError

META_FETCHER_UA = "facebookexternalhit/1.1 (+http://www.facebook.com/externalhit_uatext.php)"
MAX_IMAGE_BYTES = 8 * 1024 * 1024   # Instagram and Threads: 8 MB
JPEG_MAGIC = b"\xff\xd8\xff"


@dataclass
class StepRequest:
    """The fields a Meta step reads. ``handle`` is the last one committed through ``checkpoint``;
    ``checkpoint(handle)`` must commit durably before it returns (the next call may be irreversible)."""

    caption: str
    alt_text: str = ""
    media_path: Path | None = None
    media_url: str | None = None
    handle: dict | None = None
    attempt_started_at: datetime | None = None
    checkpoint: Callable[[dict], None] = field(default=lambda handle: None)


def utcnow() -> datetime:
    return datetime.now(UTC)


def iso(dt: datetime) -> str:
    return dt.astimezone(UTC).isoformat(timespec="seconds")


def parse_time(value: str | None) -> datetime | None:
    """Graph's ``2024-05-01T10:00:00+0000`` and our own ISO strings."""
    if not value:
        return None
    try:
        dt = datetime.fromisoformat(value.replace("Z", "+00:00"))
    except ValueError:
        try:
            dt = datetime.strptime(value, "%Y-%m-%dT%H:%M:%S%z")
        except ValueError:
            return None
    return dt if dt.tzinfo else dt.replace(tzinfo=UTC)


# --------------------------------------------------------------------------- the public media URL


def media_url_problem(url: str | None, *, timeout: float = 10.0, http: httpx.Client | None = None) -> str | None:
    """Fetch ``url`` as Meta's crawler does and say what would stop Instagram or Threads from fetching
    it, or None when it looks right (``200``, ``image/jpeg``, JPEG bytes, ≤ 8 MB).

    Meta's error for an unfetchable URL (9004 "media could not be fetched") names no cause; this finds
    the usual ones first: no ``api.public_url``, a proxy or CDN answering with a login page or a bot
    challenge, a wrong content type, an expired link. Used before every container and by
    ``aiposter config check``.
    """
    if not url:
        return ("no public URL for the image: Instagram and Threads fetch images from the web, so set "
                "[api] public_url to an address of this server reachable from the internet")
    if not url.startswith(("http://", "https://")):
        return f"the image URL {url!r} is not an http(s) URL"
    client = http or _probe_client()
    try:
        with client.stream("GET", url, headers={"User-Agent": META_FETCHER_UA, "Accept": "*/*"},
                           timeout=timeout) as r:
            head = b""
            for chunk in r.iter_bytes():
                head += chunk
                if len(head) >= 16:
                    break
            ctype = r.headers.get("content-type", "").split(";")[0].strip().lower()
            length = r.headers.get("content-length")
            shown = _redact(url)
            if r.status_code != 200:
                hint = {401: "it asks for a login", 403: "it refuses Meta's crawler (a proxy, firewall or bot "
                        "protection?)", 404: "the link has expired or the image is gone",
                        429: "it rate-limits Meta's crawler", 503: "a bot challenge or an outage"}.get(
                            r.status_code, "")
                return f"the image URL {shown} answers HTTP {r.status_code} to Meta's crawler" + (
                    f": {hint}" if hint else "")
            if ctype != "image/jpeg":
                what = "an HTML page (a login page or a bot challenge?)" if "html" in ctype else repr(ctype)
                if r.history:  # Meta's crawler follows redirects too, and ends up here
                    what = f"a redirect to {_redact(str(r.url))}, which is {what}"
                return f"the image URL {shown} serves {what}, not image/jpeg, to Meta's crawler"
            if not head.startswith(JPEG_MAGIC):
                return f"the image URL {shown} says image/jpeg but does not serve JPEG bytes"
            if length and length.isdigit() and int(length) > MAX_IMAGE_BYTES:
                return f"the image at {shown} is {int(length) / 1e6:.1f} MB; Instagram and Threads take 8 MB"
    except httpx.TimeoutException:
        return f"the image URL {_redact(url)} did not answer in {timeout:g} s"
    except httpx.ConnectError as exc:
        text = str(exc)
        if "SSL" in text or "CERTIFICATE" in text.upper() or "TLS" in text:
            return (f"the image URL {_redact(url)} fails its TLS handshake (Meta needs a valid certificate "
                    f"for the host): {text[:200]}")
        return f"nothing answers at {_redact(url)} (is the server running there?): {text[:200]}"
    except httpx.HTTPError as exc:
        return f"the image URL {_redact(url)} cannot be fetched: {exc.__class__.__name__}: {str(exc)[:200]}"
    return None


_probe_lock = threading.Lock()
_probe: httpx.Client | None = None


def _probe_client() -> httpx.Client:
    """One client for every probe of the process (httpx clients are thread-safe). A client per probe
    built an SSL context each time (``load_verify_locations``, ~60 ms under load): more than half of
    every Instagram or Threads step against a fast platform. No connection is kept alive: each probe
    connects afresh, as Meta's fetcher does, and never reuses a socket to a server that went away."""
    global _probe
    with _probe_lock:
        if _probe is None:
            _probe = httpx.Client(follow_redirects=True, limits=httpx.Limits(max_keepalive_connections=0))
        return _probe


def probe_media_url(url: str | None, who: str, **kw) -> None:
    """:func:`media_url_problem` as an error: install-wide (``config``), so the target waits rather
    than fails, and the reason says what to fix."""
    problem = media_url_problem(url, **kw)
    if problem:
        raise PublishError(f"{who} cannot fetch the image: {problem}", code="config", retry_after=600)


def _redact(url: str) -> str:
    """The URL without its query (the signature) for messages and logs."""
    return url.split("?", 1)[0]
