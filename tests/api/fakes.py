"""A strict loopback fake of the OAuth endpoints of Google, Meta (Facebook/Instagram) and Threads.

The browser step is played by the test: :meth:`FakeOAuth.approve` reads the authorize URL the API handed
out and returns the code the provider would have put on the redirect. The token endpoints then check
everything a real provider checks: client id and secret, redirect URI, single-use codes, and for Google
the PKCE verifier against the challenge.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
import secrets
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from urllib.parse import parse_qs, urlparse

CLIENT_ID, CLIENT_SECRET = "google-client", "google-secret"
META_ID, META_SECRET = "meta-app", "meta-secret"
THREADS_ID, THREADS_SECRET = "threads-app", "threads-secret"
DRIVE_SCOPE = "https://www.googleapis.com/auth/drive.readonly"


# Facebook Pages a user may grant, some with a linked Instagram professional account.
BAKERY = {"id": "p1", "name": "Bakery", "ig": {"id": "ig1", "username": "bakery.ig"}}
GARAGE = {"id": "p2", "name": "Garage", "ig": None}
FLORIST = {"id": "p3", "name": "Florist", "ig": {"id": "ig3", "username": "florist.ig"}}


class FakeOAuth:
    def __init__(self):
        self.codes: dict[str, dict] = {}  # code -> what the authorize request carried
        self.tokens: dict[str, str] = {}  # token -> kind
        self.calls: list[tuple[str, str]] = []
        self.pages = [BAKERY, GARAGE]  # what Facebook Login grants (tests set their own)
        self.grant_scope = DRIVE_SCOPE
        self.revoked: set[str] = set()  # refresh tokens the user revoked (Google answers invalid_grant)
        fake = self

        class Handler(BaseHTTPRequestHandler):
            def log_message(self, *args):
                pass

            def do_GET(self):
                u = urlparse(self.path)
                fake._handle(self, "GET", u.path, {k: v[0] for k, v in parse_qs(u.query).items()})

            def do_POST(self):
                u = urlparse(self.path)
                body = self.rfile.read(int(self.headers.get("Content-Length") or 0)).decode()
                params = {k: v[0] for k, v in parse_qs(u.query).items()}
                params.update({k: v[0] for k, v in parse_qs(body).items()})
                fake._handle(self, "POST", u.path, params)

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}"
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)
        self.thread.start()

    def close(self):
        self.server.shutdown()
        self.server.server_close()

    # ------------------------------------------------------------------ the browser step

    def approve(self, authorize_url: str) -> tuple[str, str]:
        """(code, state) for a user who consents on the provider's page."""
        q = {k: v[0] for k, v in parse_qs(urlparse(authorize_url).query).items()}
        code = "code-" + secrets.token_hex(6)
        self.codes[code] = q
        return code, q["state"]

    # ------------------------------------------------------------------ endpoints

    def _handle(self, h, method, path, p):
        self.calls.append((method, path))
        routes = {
            ("POST", "/google/token"): self._google_token,
            ("GET", "/google/drive/v3/about"): self._google_about,
            ("GET", "/graph/v21.0/oauth/access_token"): self._meta_token,
            ("GET", "/graph/v21.0/me/accounts"): self._meta_accounts,
            ("POST", "/threads/oauth/access_token"): self._threads_token,
            ("GET", "/threads/access_token"): self._threads_long,
            ("GET", "/threads/v1.0/me"): self._threads_me,
        }
        fn = routes.get((method, path))
        status, body = (404, {"error": "no such endpoint"}) if fn is None else fn(p, h.headers)
        data = json.dumps(body).encode()
        h.send_response(status)
        h.send_header("Content-Type", "application/json")
        h.send_header("Content-Length", str(len(data)))
        h.end_headers()
        h.wfile.write(data)

    def _take_code(self, p, client_id):
        req = self.codes.pop(p.get("code", ""), None)
        if req is None or req.get("client_id") != client_id or req.get("redirect_uri") != p.get("redirect_uri"):
            return None
        return req

    def _token(self, kind):
        t = f"{kind}-{secrets.token_hex(8)}"
        self.tokens[t] = kind
        return t

    def _google_token(self, p, headers):
        basic = (headers.get("Authorization") or "").removeprefix("Basic ")
        if basic:  # client_secret_basic, as requests-oauthlib sends it; the body form is accepted too
            p["client_id"], _, p["client_secret"] = base64.b64decode(basic).decode().partition(":")
        if p.get("client_id") != CLIENT_ID or p.get("client_secret") != CLIENT_SECRET:
            return 401, {"error": "invalid_client", "error_description": "The OAuth client was not found."}
        if p.get("grant_type") == "refresh_token":  # google-auth's Credentials.refresh
            token = p.get("refresh_token", "")
            if self.tokens.get(token) != "google-refresh" or token in self.revoked:
                return 400, {"error": "invalid_grant", "error_description": "Token has been expired or revoked."}
            return 200, {"access_token": self._token("google"), "expires_in": 3599, "token_type": "Bearer",
                         "scope": self.grant_scope}
        req = self._take_code(p, CLIENT_ID)
        if req is None or p.get("grant_type") != "authorization_code":
            return 400, {"error": "invalid_grant", "error_description": "Bad code."}
        verifier = p.get("code_verifier", "")
        challenge = base64.urlsafe_b64encode(hashlib.sha256(verifier.encode()).digest()).decode().rstrip("=")
        if req.get("code_challenge_method") != "S256" or req.get("code_challenge") != challenge:
            return 400, {"error": "invalid_grant", "error_description": "PKCE verification failed."}
        return 200, {"access_token": self._token("google"), "expires_in": 3599, "token_type": "Bearer",
                     "refresh_token": self._token("google-refresh"), "scope": self.grant_scope}

    def _google_about(self, p, headers):
        token = (headers.get("Authorization") or "").removeprefix("Bearer ")
        if self.tokens.get(token) != "google":
            return 401, {"error": {"message": "Invalid Credentials"}}
        return 200, {"user": {"displayName": "Ann", "emailAddress": "ann@gmail.example", "permissionId": "g-42"}}

    def _meta_token(self, p, _headers):
        if p.get("client_id") != META_ID or p.get("client_secret") != META_SECRET:
            return 400, {"error": {"message": "Error validating client secret.", "type": "OAuthException",
                                   "code": 1}}
        if p.get("grant_type") == "fb_exchange_token":
            if self.tokens.get(p.get("fb_exchange_token")) != "fb-short":
                return 400, {"error": {"message": "Invalid OAuth access token.", "code": 190}}
            return 200, {"access_token": self._token("fb-long"), "token_type": "bearer", "expires_in": 5183944}
        if self._take_code(p, META_ID) is None:
            return 400, {"error": {"message": "This authorization code has been used.", "code": 100}}
        return 200, {"access_token": self._token("fb-short"), "token_type": "bearer", "expires_in": 3600}

    def _meta_accounts(self, p, _headers):
        if self.tokens.get(p.get("access_token")) != "fb-long":
            return 400, {"error": {"message": "Invalid OAuth access token.", "code": 190}}
        # The app requires appsecret_proof ("Require App Secret"), as ai-poster's Meta app should.
        proof = hmac.new(META_SECRET.encode(), p["access_token"].encode(), hashlib.sha256).hexdigest()
        if not hmac.compare_digest(p.get("appsecret_proof", ""), proof):
            return 400, {"error": {"message": "Invalid appsecret_proof provided in the API argument",
                                   "type": "GraphMethodException", "code": 100}}
        data = []
        for page in self.pages:
            row = {"id": page["id"], "name": page["name"], "access_token": self._token("page"),
                   "tasks": page.get("tasks", ["ADVERTISE", "ANALYZE", "CREATE_CONTENT", "MESSAGING",
                                               "MODERATE", "MANAGE"])}
            if "instagram_business_account" in p.get("fields", "") and page["ig"]:
                row["instagram_business_account"] = page["ig"]
            data.append(row)
        return 200, {"data": data, "paging": {"cursors": {"before": "a", "after": "b"}}}

    def _threads_token(self, p, _headers):
        if p.get("client_id") != THREADS_ID or p.get("client_secret") != THREADS_SECRET:
            return 400, {"error": {"message": "invalid client", "code": 101}}
        if p.get("grant_type") != "authorization_code" or self._take_code(p, THREADS_ID) is None:
            return 400, {"error": {"message": "invalid code", "code": 100}}
        return 200, {"access_token": self._token("th-short"), "user_id": 777}

    def _threads_long(self, p, _headers):
        if p.get("client_secret") != THREADS_SECRET or self.tokens.get(p.get("access_token")) != "th-short":
            return 400, {"error": {"message": "invalid token", "code": 190}}
        return 200, {"access_token": self._token("th-long"), "token_type": "bearer", "expires_in": 5183944}

    def _threads_me(self, p, _headers):
        if self.tokens.get(p.get("access_token")) != "th-long":
            return 400, {"error": {"message": "invalid token", "code": 190}}
        return 200, {"id": "777", "username": "ann.threads"}


def oauth_config(url: str) -> dict:
    return {
        "google": {"client_id": CLIENT_ID, "client_secret": CLIENT_SECRET, "auth_uri": f"{url}/google/auth",
                   "token_uri": f"{url}/google/token", "drive_api_url": f"{url}/google/drive/v3"},
        "meta": {"app_id": META_ID, "app_secret": META_SECRET, "graph_base_url": f"{url}/graph/v21.0",
                 "authorize_url": f"{url}/facebook/dialog/oauth"},
        "threads": {"app_id": THREADS_ID, "app_secret": THREADS_SECRET, "graph_base_url": f"{url}/threads",
                    "authorize_url": f"{url}/threads/oauth/authorize"},
    }
