"""Rate limits kept in the database, so that parallel requests and API replicas share one count.

An attempt is counted *before* the password is checked, with one atomic upsert whose returned count decides:
40 parallel guesses against a limit of 5 get 5 password checks and 35 answers of 429, on any number of
replicas. Once a key is over its limit, further attempts are refused by a read alone, so a flood of refused
guesses does not turn into a flood of writes. Windows are fixed: they start at a key's first attempt.

Login keys, checked in this order (a refused earlier key does not count on the later ones):

* the client address (IPv6 by its /64): one machine cannot guess across many accounts;
* the account *from that client*: a stranger exhausts only their own allowance on someone's account;
* the account from all clients (a higher limit): a distributed guess stops too. A client address the user
  has logged in from before (a session row from it) is exempt from this one, so strangers elsewhere
  cannot lock the owner out for good.
"""

from __future__ import annotations

import hashlib
import ipaddress
import time

import sqlalchemy as sa
from sqlalchemy.dialects import postgresql, sqlite
from sqlmodel import Session

from aiposter.core.models import RateLimit
from aiposter.services import ServiceError


class RateLimited(ServiceError):
    code = "rate_limited"

    def __init__(self, message: str, retry_after: int, first: bool = False):
        super().__init__(message)
        self.retry_after = retry_after
        self.first = first  # this attempt is the one that crossed the limit (log it once, not per refusal)


def client_key(address: str) -> str:
    """The unit a client address is limited by: an IPv4 address, or an IPv6 /64 (one subscriber's prefix;
    counting single IPv6 addresses would give an attacker 2^64 fresh clients)."""
    try:
        ip = ipaddress.ip_address(address)
    except ValueError:
        return address[:200]
    if ip.version == 6 and ip.ipv4_mapped is None:
        return str(ipaddress.ip_network(f"{ip}/64", strict=False))
    return str(getattr(ip, "ipv4_mapped", None) or ip)


def _hash(key: str) -> str:
    return hashlib.sha256(key.encode()).hexdigest()


class Counter:
    """Fixed-window counters in the ``rate_limit`` table."""

    def __init__(self, window_seconds: int, clock=time.time):
        self.window = window_seconds
        self.clock = clock

    def _retry_after(self, window_start: float, now: float) -> int:
        return max(1, int(window_start + self.window - now) + 1)

    def hit(self, s: Session, key: str, limit: int, what: str) -> None:
        """Count one attempt on ``key`` and commit it; RateLimited if that makes more than ``limit``."""
        now = self.clock()
        h = _hash(key)
        table = RateLimit.__table__
        row = s.execute(sa.select(table.c.count, table.c.window_start).where(table.c.key_hash == h)).first()
        # Over the limit already (and the crossing attempt recorded): refuse by a read alone.
        if row is not None and row.window_start > now - self.window and row.count > limit:
            raise RateLimited(self._message(what, self._retry_after(row.window_start, now)),
                              self._retry_after(row.window_start, now))
        insert = (postgresql.insert if s.get_bind().dialect.name == "postgresql" else sqlite.insert)(table)
        expired = table.c.window_start <= now - self.window
        stmt = insert.values(key_hash=h, window_start=now, count=1).on_conflict_do_update(
            index_elements=[table.c.key_hash],
            set_={"count": sa.case((expired, 1), else_=table.c.count + 1),
                  "window_start": sa.case((expired, now), else_=table.c.window_start)},
        ).returning(table.c.count, table.c.window_start)
        count, start = s.execute(stmt).one()
        s.commit()  # counted before the guarded check, and kept whatever the request does next
        if count > limit:
            retry = self._retry_after(start, now)
            raise RateLimited(self._message(what, retry), retry, first=count == limit + 1)

    @staticmethod
    def _message(what: str, retry: int) -> str:
        return f"too many failed attempts for this {what}; try again in {retry} s"

    def release(self, s: Session, key: str) -> None:
        """Give back one counted attempt (it succeeded)."""
        table = RateLimit.__table__
        s.execute(sa.update(table).where(table.c.key_hash == _hash(key), table.c.count > 0)
                  .values(count=table.c.count - 1))

    def clear(self, s: Session, key: str) -> None:
        s.execute(sa.delete(RateLimit).where(RateLimit.key_hash == _hash(key)))

    def purge(self, s: Session) -> int:
        """Drop counters whose window is over (housekeeping)."""
        return s.execute(sa.delete(RateLimit).where(RateLimit.window_start <= self.clock() - self.window)).rowcount


class LoginLimiter:
    """Limits on password checks: logins, and re-authentication (password change, account deletion)."""

    def __init__(self, per_account: int, per_client: int, window_seconds: int,
                 per_account_all_clients: int | None = None, clock=time.time):
        self.per_account, self.per_client = per_account, per_client
        self.per_account_all = per_account_all_clients or per_account * 20
        self.counter = Counter(window_seconds, clock)

    def login_attempt(self, s: Session, email: str, client: str, known_client: bool) -> None:
        ck = client_key(client)
        self.counter.hit(s, f"login:client:{ck}", self.per_client, "client address")
        self.counter.hit(s, f"login:account:{email}:{ck}", self.per_account, "account")
        if not known_client:
            self.counter.hit(s, f"login:account:{email}", self.per_account_all, "account")

    def login_succeeded(self, s: Session, email: str, client: str, known_client: bool) -> None:
        ck = client_key(client)
        self.counter.release(s, f"login:client:{ck}")
        self.counter.clear(s, f"login:account:{email}:{ck}")
        if not known_client:
            self.counter.release(s, f"login:account:{email}")

    def reauth_attempt(self, s: Session, user_id: int) -> None:
        """A password check by someone already holding a token (a stolen token must not become a
        password oracle)."""
        self.counter.hit(s, f"reauth:user:{user_id}", self.per_account, "account")

    def reauth_succeeded(self, s: Session, user_id: int) -> None:
        self.counter.clear(s, f"reauth:user:{user_id}")
