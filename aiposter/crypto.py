"""Encryption at rest for every stored credential.

AES-256-GCM (authenticated) from ``cryptography``. A key is written ``KEYID:BASE64KEY`` (``aiposter keys
new`` prints one). Every ciphertext carries the id of the key that made it: ``v1:KEYID:BASE64(nonce|ct)``,
so the active key can rotate while older keys (``security.previous_encryption_keys``) still decrypt.

Key sources, in order: ``security.encryption_key`` (or its ``_file``/env forms), ``security.
encryption_key_file``, then, on the embedded defaults only, ``<data_dir>/encryption.key``, created on first
start with mode 0600. A configured key that is missing or does not decrypt what is stored refuses start-up;
nothing here ever overwrites or silently replaces a key.
"""

from __future__ import annotations

import base64
import binascii
import logging
import os
import secrets
from dataclasses import dataclass
from pathlib import Path

import sqlalchemy as sa
from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives.ciphers.aead import AESGCM

from aiposter.config import Config, ConfigError

log = logging.getLogger(__name__)

PREFIX = "v1"
KEY_FILE_NAME = "encryption.key"


class DecryptError(Exception):
    pass


@dataclass(frozen=True)
class Key:
    kid: str
    secret: bytes

    def encode(self) -> str:
        return f"{self.kid}:{base64.urlsafe_b64encode(self.secret).decode()}"


def new_key() -> Key:
    return Key(kid="k" + secrets.token_hex(4), secret=AESGCM.generate_key(bit_length=256))


def parse_key(text: str, where: str) -> Key:
    text = text.strip()
    kid, sep, b64 = text.partition(":")
    if not sep or not kid or not kid.isalnum():
        raise ConfigError(f"{where}: not an encryption key (expected KEYID:BASE64 as printed by "
                          "`aiposter keys new`)")
    try:
        secret = base64.urlsafe_b64decode(b64.encode())
    except (binascii.Error, ValueError):
        raise ConfigError(f"{where}: key {kid} is not valid base64") from None
    if len(secret) != 32:
        raise ConfigError(f"{where}: key {kid} must be 32 bytes (AES-256), got {len(secret)}")
    return Key(kid, secret)


class Keyring:
    """Encrypts with the active key; decrypts with whichever key id the ciphertext names."""

    def __init__(self, active: Key, previous: list[Key] | None = None):
        self.active = active
        self.keys = {k.kid: k for k in (previous or [])}
        self.keys[active.kid] = active

    def encrypt(self, plaintext: str | bytes, context: str = "") -> str:
        data = plaintext.encode() if isinstance(plaintext, str) else plaintext
        nonce = os.urandom(12)
        ct = AESGCM(self.active.secret).encrypt(nonce, data, self._aad(self.active.kid, context))
        return f"{PREFIX}:{self.active.kid}:{base64.urlsafe_b64encode(nonce + ct).decode()}"

    def decrypt(self, token: str, context: str = "") -> str:
        kid = key_id_of(token)
        key = self.keys.get(kid)
        if key is None:
            raise DecryptError(f"credential was encrypted with key {kid}, which is not configured")
        raw = base64.urlsafe_b64decode(token.split(":", 2)[2].encode())
        try:
            return AESGCM(key.secret).decrypt(raw[:12], raw[12:], self._aad(kid, context)).decode()
        except InvalidTag:
            raise DecryptError(f"key {kid} does not decrypt this credential (wrong key?)") from None

    @staticmethod
    def _aad(kid: str, context: str) -> bytes:
        return f"aiposter:{PREFIX}:{kid}:{context}".encode()


def key_id_of(token: str) -> str:
    parts = token.split(":", 2)
    if len(parts) != 3 or parts[0] != PREFIX:
        raise DecryptError("not an aiposter ciphertext")
    return parts[1]


def _read_key_file(path: Path, key_name: str) -> Key:
    try:
        text = path.read_text(encoding="utf-8")
    except FileNotFoundError:
        raise ConfigError(
            f"[security] {key_name}: key file {path} does not exist; restore it from your backup, or "
            f"if this is a new install create one with `aiposter keys new > {path} && chmod 600 {path}`"
        ) from None
    except OSError as exc:
        raise ConfigError(f"[security] {key_name}: cannot read key file {path}: {exc.strerror}") from None
    return parse_key(text, f"key file {path}")


def load_keyring(cfg: Config, engine: sa.Engine | None = None, create: bool = True) -> Keyring:
    """Find the active key (creating the embedded one on first start), then prove it fits the data."""
    sec = cfg.security
    previous = [parse_key(k.get_secret_value(), "[security] previous_encryption_keys")
                for k in sec.previous_encryption_keys]
    if sec.encryption_key is not None and sec.encryption_key.get_secret_value():
        active = parse_key(sec.encryption_key.get_secret_value(), "[security] encryption_key")
    elif sec.encryption_key_file:
        active = _read_key_file(Path(sec.encryption_key_file), "encryption_key_file")
    else:
        path = cfg.data_dir / KEY_FILE_NAME
        if path.exists():
            active = _read_key_file(path, f"embedded key {path}")
        else:
            if engine is not None and _stored_credentials(engine):
                raise ConfigError(
                    f"[security] the database holds encrypted credentials but the key file {path} is "
                    "missing; restore it from your backup (a new key cannot decrypt them)"
                )
            if not create:
                raise ConfigError(f"[security] no encryption key configured and {path} does not exist")
            active = new_key()
            path.parent.mkdir(parents=True, exist_ok=True)
            fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
            with os.fdopen(fd, "w") as fh:
                fh.write(active.encode() + "\n")
            log.warning("created a new encryption key at %s (mode 0600); back it up: without it the "
                        "stored account tokens cannot be read", path, extra={"event": "key.created"})
    ring = Keyring(active, previous)
    if engine is not None:
        verify_keyring(ring, engine)
    return ring


def _stored_credentials(engine: sa.Engine) -> list[tuple[int, str]]:
    """One (connection id, ciphertext) sample per key id found in the database."""
    from aiposter.core.models import Connection

    samples: dict[str, tuple[int, str]] = {}
    try:
        with engine.connect() as conn:
            for cid, token in conn.execute(sa.select(Connection.id, Connection.credentials).where(
                    Connection.credentials.is_not(None))):
                try:
                    samples.setdefault(key_id_of(token), (cid, token))
                except DecryptError:
                    continue
    except (sa.exc.OperationalError, sa.exc.ProgrammingError):
        return []  # schema not there yet
    return list(samples.values())


def verify_keyring(ring: Keyring, engine: sa.Engine) -> None:
    """Refuse to start with keys that cannot read what is stored (instead of failing later, per post)."""
    for cid, token in _stored_credentials(engine):
        kid = key_id_of(token)
        if kid not in ring.keys:
            raise ConfigError(
                f"[security] stored credentials were encrypted with key {kid}, but the configured key is "
                f"{ring.active.kid}; configure key {kid} (as encryption_key or in previous_encryption_keys)"
            )
        try:
            ring.decrypt(token, context=connection_context(cid))
        except DecryptError:
            raise ConfigError(
                f"[security] the configured key {kid} does not decrypt the stored credentials (right id, "
                "wrong value); restore the original key"
            ) from None


def connection_context(connection_id: int) -> str:
    """Binds a ciphertext to its row, so a token copied onto another connection will not decrypt."""
    return f"connection:{connection_id}"


def grant_context(grant_id: int) -> str:
    """Binds the accounts (and Page tokens) of a pending Meta grant to its row."""
    return f"meta_grant:{grant_id}"
