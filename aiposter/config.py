"""Configuration: one TOML file, overridable per key by environment, secrets optionally from files.

Lookup order for the file: ``--config``, ``$AIPOSTER_CONFIG``, ``./config.toml``; with none of them the
built-in defaults apply (the embedded mode). Every key can be overridden by an environment variable named
``AIPOSTER_<SECTION>_<KEY>`` (``AIPOSTER_DB_URL``, ``AIPOSTER_LOG_FORMAT``,
``AIPOSTER_CAPTIONER_OPENAI_API_KEY``). Every secret key ``k`` also accepts ``k_file`` (and
``AIPOSTER_..._K_FILE``): the path of a file holding the secret.

Errors never surface as tracebacks: :class:`ConfigError` carries one line naming the key and its source.
"""

from __future__ import annotations

import json
import os
import re
import tomllib
import types
import typing
from pathlib import Path
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, PrivateAttr, SecretStr, ValidationError, field_validator

ENV_PREFIX = "AIPOSTER_"
CONFIG_ENV = "AIPOSTER_CONFIG"
DEFAULT_CONFIG_PATH = Path("config.toml")


class ConfigError(Exception):
    """A configuration problem the operator must fix; the message is one line."""


class Section(BaseModel):
    model_config = ConfigDict(extra="forbid", strict=True, validate_default=True)


class DBConfig(Section):
    url: SecretStr = SecretStr("sqlite:///./data/aiposter.db")
    pool_size: int = Field(5, ge=1, le=100)
    echo: bool = False


class DaemonConfig(Section):
    data_dir: str = "./data"
    workers: int = Field(4, ge=1, le=64)
    tick_seconds: float = Field(1.0, gt=0, le=60)
    lease_seconds: int = Field(60, ge=2, le=3600)
    housekeeping_seconds: int = Field(30, ge=1, le=3600)
    shutdown_timeout_seconds: float = Field(5.0, gt=0, le=300)
    instance_name: str = ""


class LogConfig(Section):
    level: Literal["DEBUG", "INFO", "WARNING", "ERROR"] = "INFO"
    format: Literal["text", "json"] = "text"


class SecurityConfig(Section):
    encryption_key: SecretStr | None = None
    encryption_key_file: str = ""
    previous_encryption_keys: list[SecretStr] = []
    session_lifetime_hours: int = Field(24 * 14, ge=1)
    # Password guesses allowed per window (then HTTP 429), counted in the database before the check:
    # per client address (IPv6: per /64), per account from one client address (also password checks of
    # POST /me/password and DELETE /me), and per account from all addresses together (addresses the user
    # has logged in from before are exempt from that one, so strangers cannot lock the owner out).
    login_max_failures_per_account: int = Field(5, ge=1)
    login_max_failures_per_client: int = Field(20, ge=1)
    login_max_failures_per_account_total: int = Field(100, ge=1)
    login_window_seconds: int = Field(900, ge=1)
    # Audit log rows (logins, user administration, connections, exports, deletions) older than this are
    # deleted by housekeeping.
    audit_retention_days: int = Field(365, ge=1)


class RetryConfig(Section):
    base_delay_seconds: float = Field(15.0, gt=0)
    max_delay_seconds: float = Field(3600.0, gt=0)
    download_attempts: int = Field(5, ge=1, le=100)
    caption_attempts: int = Field(5, ge=1, le=100)
    publish_attempts: int = Field(5, ge=1, le=100)
    # How long a target may wait on the platform (e.g. a container "processing") before it fails with the
    # platform's last status.
    publish_max_wait_seconds: float = Field(3600.0, gt=0)


class ImagesConfig(Section):
    max_file_bytes: int = Field(50 * 1024 * 1024, ge=1024)
    # 64 MP: every phone (48-50 MP) and camera body up to 61 MP in any format; JPEGs are decoded at
    # reduced size, so 100-200 MP JPEGs (medium format, 200 MP phone modes) fit as well.
    max_pixels: int = Field(64_000_000, ge=10_000)
    # The largest size any destination uses: Facebook 2048 px (Instagram 1440, Threads 1440).
    max_edge: int = Field(2048, ge=320, le=16384)
    jpeg_quality: int = Field(85, ge=50, le=100)
    # Memory all image decodes of one process may hold at once (a larger single decode runs alone).
    decode_memory_mb: int = Field(640, ge=16)


class WatchDefaultsConfig(Section):
    interval_seconds: int = Field(300, ge=1)
    min_spacing_seconds: int = Field(0, ge=0)
    maximum_age_hours: float = Field(0, ge=0)
    settle_seconds: float = Field(2.0, ge=0)
    review_ttl_hours: float = Field(72.0, gt=0, le=24 * 365)
    fit: Literal["pad", "crop"] = "pad"
    image_types: list[str] = []  # empty: each source's default

    @field_validator("image_types")
    @classmethod
    def _known_types(cls, values: list[str]) -> list[str]:
        from aiposter.core import image_types

        return list(image_types.parse(values))


class TemplateCaptionerConfig(Section):
    template: str = "{{ file_stem | replace('_', ' ') }}{% if folder %} — {{ folder }}{% endif %}" \
        "{% if capture_date %} ({{ capture_date }}){% endif %}{% if hashtags %}\n\n{{ hashtags }}{% endif %}"
    default_hashtags: list[str] = []


class LLMProviderConfig(Section):
    # Each provider's section has its own default model (the subclasses below), so a section given
    # without `model` still names one; an explicitly empty model is an error, not a request for "".
    model: str = Field("", min_length=1)
    api_key: SecretStr | None = None
    base_url: str = ""
    timeout: float = Field(60.0, gt=0)
    max_retries: int = Field(2, ge=0, le=10)
    # Long edge of the copy sent to the model: fewer pixels, fewer tokens; 1568 is where Anthropic and
    # OpenAI stop gaining detail anyway.
    max_image_edge: int = Field(1568, ge=256, le=4096)
    max_output_tokens: int = Field(4096, ge=64, le=65536)  # a cap: thinking models spend part of it
    temperature: float | None = Field(None, ge=0, le=2)  # None: the provider's default (some reject any)
    # How the JSON answer is requested: a strict schema, bare JSON mode, or only by the prompt (for
    # OpenAI-compatible servers and older models that support neither).
    structured_output: Literal["json_schema", "json_object", "none"] = "json_schema"


class OpenAIConfig(LLMProviderConfig):
    model: str = Field("gpt-4o-mini", min_length=1)


class GeminiConfig(LLMProviderConfig):
    model: str = Field("gemini-2.5-flash", min_length=1)


class AnthropicConfig(LLMProviderConfig):
    model: str = Field("claude-sonnet-4-6", min_length=1)


class OpenAICompatibleConfig(LLMProviderConfig):
    model: str = Field("llava", min_length=1)
    base_url: str = "http://127.0.0.1:11434/v1"


class CaptionerConfig(Section):
    default: Literal["template", "openai", "gemini", "anthropic", "openai_compatible"] = "template"
    template: TemplateCaptionerConfig = TemplateCaptionerConfig()
    openai: OpenAIConfig = OpenAIConfig()
    gemini: GeminiConfig = GeminiConfig()
    anthropic: AnthropicConfig = AnthropicConfig()
    openai_compatible: OpenAICompatibleConfig = OpenAICompatibleConfig()
    # The instruction LLM captioners follow when a watch has no prompt_template (sandboxed Jinja2).
    prompt: str = "Write an engaging caption for this photo for each target platform."


class MediaConfig(Section):
    # Prepared images of posts in flight; every replica must reach the same directory. Empty:
    # <data_dir>/media.
    directory: str = ""
    # How long a signed media URL handed to a platform stays valid.
    url_ttl_seconds: int = Field(3600, ge=60, le=7 * 86400)


class OutboxConfig(Section):
    directory: str = "./data/outbox"


class MetaPublishingConfig(Section):
    """Facebook Pages, Instagram and Threads (docs/publishing.md). Base URLs and versions come from here so
    that a loopback fake can stand in; the app secrets stay in [oauth.meta] and [oauth.threads]."""

    # Graph host and version. Empty: taken from [oauth.meta] graph_base_url (".../v21.0" is split).
    graph_url: str = ""
    graph_version: str = ""
    # Threads host and version.
    threads_url: str = ""          # empty: [oauth.threads] graph_base_url
    threads_version: str = "v1.0"
    connect_timeout_seconds: float = Field(10.0, gt=0)
    # An upload or a container creation (Meta fetches the image first) can be slow.
    read_timeout_seconds: float = Field(60.0, gt=0)
    # Container polling: first look after poll_seconds, doubling up to max_poll_seconds; a container not
    # FINISHED within max_wait_seconds of its creation fails the target.
    instagram_poll_seconds: float = Field(5.0, ge=0)
    instagram_max_wait_seconds: float = Field(900.0, gt=0)
    threads_poll_seconds: float = Field(10.0, ge=0)
    threads_max_wait_seconds: float = Field(600.0, gt=0)
    max_poll_seconds: float = Field(60.0, gt=0)
    # Facebook may list a new photo post a little late: recovery waits this long before re-sending.
    facebook_settle_seconds: float = Field(120.0, ge=0)
    # Percent of an app or business usage budget (X-App-Usage, X-Business-Use-Case-Usage) at which the
    # destination stops calling until the window frees.
    usage_threshold_percent: float = Field(95.0, gt=0, le=100)
    # The probe of the public media URL (as Meta's crawler) before every container.
    probe_timeout_seconds: float = Field(10.0, gt=0)


class PublishersConfig(Section):
    outbox: OutboxConfig = OutboxConfig()
    meta: MetaPublishingConfig = MetaPublishingConfig()


class SourcesConfig(Section):
    # Per-user folder templates: each names its user with {user_id} or {email}, so no root is shared.
    local_roots: list[str] = []

    @field_validator("local_roots")
    @classmethod
    def _per_user(cls, roots: list[str]) -> list[str]:
        for root in roots:
            rest = root.replace("{user_id}", "").replace("{email}", "")
            if "{" in rest or "}" in rest:
                raise ValueError(f"{root!r}: the only placeholders are {{user_id}} and {{email}}")
            if rest == root:
                raise ValueError(f"{root!r} would be shared by every user: name the user in it with "
                                 "{user_id} or {email} (e.g. /srv/photos/{user_id}); an admin can still set "
                                 "any folder with the CLI")
        return roots


class QuickstartConfig(Section):
    enabled: bool = True
    owner_email: str = "owner@localhost"
    inbox: str = "./data/inbox"
    interval_seconds: int = Field(10, ge=1)
    backfill: bool = False


class ApiConfig(Section):
    enabled: bool = True
    host: str = "127.0.0.1"
    port: int = Field(8080, ge=0, le=65535)
    # The URL users reach the API at; OAuth redirect URIs are built from it. Empty: http://host:port.
    public_url: str = ""
    # Proxies whose X-Forwarded-For is trusted for the client address (login rate limits, sessions).
    trusted_proxies: list[str] = ["127.0.0.1"]
    access_log: bool = True
    # Largest request body accepted (bytes); larger ones get HTTP 413 before they are read. Every API
    # request is small JSON: the largest (a 20,000-character caption template) stays well under 256 KiB.
    max_body_bytes: int = Field(262_144, ge=1024, le=64 * 1024 * 1024)


class GoogleOAuthConfig(Section):
    client_id: str = ""
    client_secret: SecretStr | None = None
    auth_uri: str = "https://accounts.google.com/o/oauth2/auth"
    token_uri: str = "https://oauth2.googleapis.com/token"
    drive_api_url: str = "https://www.googleapis.com/drive/v3"  # the Drive API (names the account, polls, downloads)
    revoke_uri: str = "https://oauth2.googleapis.com/revoke"  # disconnect revokes the token here (best effort)
    # Lowest Drive polling interval (seconds); with push notifications on (api.public_url is HTTPS) the
    # poll is only the safety net, so push_min_interval_seconds applies instead.
    min_interval_seconds: int = Field(30, ge=1)
    push_min_interval_seconds: int = Field(10, ge=1)
    # Open changes.watch channels when api.public_url is HTTPS (Google delivers only to HTTPS).
    push: bool = True
    # Where Google delivers push notifications; empty: <api.public_url>/api/v1/drive/push.
    push_address: str = ""


class MetaOAuthConfig(Section):
    """The Meta app behind Facebook Pages and Instagram (Instagram API with Facebook Login)."""

    app_id: str = ""
    app_secret: SecretStr | None = None
    graph_base_url: str = "https://graph.facebook.com/v21.0"
    authorize_url: str = "https://www.facebook.com/v21.0/dialog/oauth"


class ThreadsOAuthConfig(Section):
    app_id: str = ""
    app_secret: SecretStr | None = None
    graph_base_url: str = "https://graph.threads.net"
    authorize_url: str = "https://threads.net/oauth/authorize"


class OAuthConfig(Section):
    google: GoogleOAuthConfig = GoogleOAuthConfig()
    meta: MetaOAuthConfig = MetaOAuthConfig()
    threads: ThreadsOAuthConfig = ThreadsOAuthConfig()
    state_ttl_seconds: int = Field(600, ge=60, le=3600)
    timeout_seconds: float = Field(20.0, gt=0)


class NotifyConfig(Section):
    enabled: bool = True
    check_seconds: float = Field(15.0, gt=0, le=3600)
    min_interval_seconds: float = Field(300.0, ge=0, le=86400)
    timeout_seconds: float = Field(10.0, gt=0, le=120)
    max_attempts: int = Field(3, ge=1, le=20)


class Config(Section):
    db: DBConfig = DBConfig()
    daemon: DaemonConfig = DaemonConfig()
    log: LogConfig = LogConfig()
    security: SecurityConfig = SecurityConfig()
    retry: RetryConfig = RetryConfig()
    images: ImagesConfig = ImagesConfig()
    media: MediaConfig = MediaConfig()
    watch_defaults: WatchDefaultsConfig = WatchDefaultsConfig()
    captioner: CaptionerConfig = CaptionerConfig()
    publishers: PublishersConfig = PublishersConfig()
    sources: SourcesConfig = SourcesConfig()
    quickstart: QuickstartConfig = QuickstartConfig()
    api: ApiConfig = ApiConfig()
    oauth: OAuthConfig = OAuthConfig()
    notify: NotifyConfig = NotifyConfig()

    # Where the values came from; not a config key.
    source: str = Field("built-in defaults", exclude=True)
    # Per key (a path tuple): "default", "file PATH", "environment variable NAME", "secret file PATH (...)".
    _origins: dict[tuple[str, ...], str] = PrivateAttr(default_factory=dict)

    def origin(self, path: tuple[str, ...]) -> str:
        """Where the effective value of the key at ``path`` came from (what `config check` shows)."""
        return self._origins.get(tuple(path), "default")

    def environment_variables(self) -> list[str]:
        """The AIPOSTER_* variables that set a value (logged at start: they win over the file)."""
        return sorted({m for o in self._origins.values() for m in re.findall(r"environment variable (\w+)", o)})

    @property
    def data_dir(self) -> Path:
        return Path(self.daemon.data_dir)

    @property
    def media_dir(self) -> Path:
        return Path(self.media.directory) if self.media.directory else self.data_dir / "media"

    @property
    def db_url(self) -> str:
        return self.db.url.get_secret_value()


# --------------------------------------------------------------------------- schema walking


def _section_type(annotation: Any) -> type[Section] | None:
    if isinstance(annotation, type) and issubclass(annotation, Section):
        return annotation
    return None


def _is_secret(annotation: Any) -> bool:
    if annotation is SecretStr:
        return True
    origin = typing.get_origin(annotation)
    if origin in (typing.Union, types.UnionType):
        return any(_is_secret(a) for a in typing.get_args(annotation))
    return False


def _is_stringy(annotation: Any) -> bool:
    if annotation in (str, SecretStr):
        return True
    origin = typing.get_origin(annotation)
    if origin is Literal:
        return all(isinstance(a, str) for a in typing.get_args(annotation))
    if origin in (typing.Union, types.UnionType):
        args = [a for a in typing.get_args(annotation) if a is not type(None)]
        return all(_is_stringy(a) for a in args)
    return False


def iter_keys(model: type[Section] = Config, prefix: tuple[str, ...] = ()):
    """Yield (path, annotation) for every leaf key of the schema."""
    for name, field in model.model_fields.items():
        if field.exclude:
            continue
        sub = _section_type(field.annotation)
        if sub is not None:
            yield from iter_keys(sub, prefix + (name,))
        else:
            yield prefix + (name,), field.annotation


def env_name(path: tuple[str, ...]) -> str:
    return ENV_PREFIX + "_".join(p.upper() for p in path)


def is_config_variable(name: str) -> bool:
    """Whether ``name`` is in the config's namespace: ``AIPOSTER_CONFIG`` or ``AIPOSTER_<SECTION>_...`` for
    one of the config's sections. Only those are checked for typos; other ``AIPOSTER_*`` variables (the
    test suite's ``AIPOSTER_TEST_PG``, an orchestrator's own) are not the daemon's business."""
    if name == CONFIG_ENV:
        return True
    return any(name.startswith(f"{ENV_PREFIX}{section.upper()}_") for section, field in Config.model_fields.items()
               if not field.exclude)


def _fmt_key(path: tuple[str, ...] | list) -> str:
    parts = [str(p) for p in path]
    if len(parts) == 1:
        return parts[0]
    return f"[{'.'.join(parts[:-1])}] {parts[-1]}"


# --------------------------------------------------------------------------- loading


def resolve_path(explicit: str | os.PathLike | None, environ: dict[str, str] | None = None) -> Path | None:
    """The config file to read, or None for built-in defaults. Missing explicit files are errors."""
    environ = os.environ if environ is None else environ
    if explicit:
        p = Path(explicit)
        if not p.is_file():
            raise ConfigError(f"config file {p} does not exist (given with --config)")
        return p
    env = environ.get(CONFIG_ENV)
    if env:
        p = Path(env)
        if not p.is_file():
            raise ConfigError(f"config file {p} does not exist (given by ${CONFIG_ENV})")
        return p
    if DEFAULT_CONFIG_PATH.is_file():
        return DEFAULT_CONFIG_PATH
    return None


def _read_secret_file(path: str, key: str, where: str) -> str:
    try:
        return Path(path).read_text(encoding="utf-8").strip()
    except OSError as exc:
        raise ConfigError(f"{where}: {key}: cannot read secret file {path}: {exc.strerror}") from None


def _parse_env_value(raw: str, annotation: Any) -> Any:
    if _is_stringy(annotation):
        return raw
    try:
        return tomllib.loads(f"v = {raw}")["v"]
    except tomllib.TOMLDecodeError:
        try:
            return json.loads(raw)
        except ValueError:
            return raw


def load(explicit: str | os.PathLike | None = None, environ: dict[str, str] | None = None) -> Config:
    environ = dict(os.environ if environ is None else environ)
    path = resolve_path(explicit, environ)
    raw: dict[str, Any] = {}
    origin: dict[tuple, str] = {}
    where = str(path) if path else "built-in defaults"
    if path is not None:
        try:
            with open(path, "rb") as fh:
                raw = tomllib.load(fh)
        except tomllib.TOMLDecodeError as exc:
            raise ConfigError(f"{path}: not valid TOML: {exc}") from None
        except OSError as exc:
            raise ConfigError(f"{path}: cannot read: {exc.strerror}") from None

    # Where each key's value comes from, for `config check`: the file first, then what overrides it.
    origins: dict[tuple, str] = {}
    for key_path, _annotation in iter_keys():
        node: Any = raw
        for part in key_path:
            node = node.get(part) if isinstance(node, dict) else None
        if node is not None:
            origins[key_path] = f"file {where}"

    # Secrets given as files inside the TOML.
    for key_path, annotation in iter_keys():
        if not _is_secret(annotation):
            continue
        parent = raw
        for part in key_path[:-1]:
            parent = parent.get(part) if isinstance(parent, dict) else None
            if parent is None:
                break
        if not isinstance(parent, dict):
            continue
        file_key = key_path[-1] + "_file"
        if file_key in parent:
            fpath = parent.pop(file_key)
            if not isinstance(fpath, str):
                raise ConfigError(f"{where}: {_fmt_key(key_path[:-1] + (file_key,))}: must be a path string")
            if fpath:
                parent[key_path[-1]] = _read_secret_file(fpath, _fmt_key(key_path[:-1] + (file_key,)), where)
                origins[key_path] = f"secret file {fpath} ({file_key} in {where})"

    # Environment overrides.
    known_env = {CONFIG_ENV}
    for key_path, annotation in iter_keys():
        name = env_name(key_path)
        known_env.add(name)
        value: Any = None
        shown = ""
        if name in environ:
            value = _parse_env_value(environ[name], annotation)
            shown = f"environment variable {name}"
        if _is_secret(annotation):
            known_env.add(name + "_FILE")
            if environ.get(name + "_FILE"):
                value = _read_secret_file(environ[name + "_FILE"], name + "_FILE", "environment")
                shown = f"secret file {environ[name + '_FILE']} (environment variable {name}_FILE)"
        if value is None:
            continue
        overridden = origins.get(key_path)
        origins[key_path] = shown + (f", over the {overridden}" if overridden else "")
        node = raw
        for part in key_path[:-1]:
            node = node.setdefault(part, {})
            if not isinstance(node, dict):
                raise ConfigError(f"{where}: {_fmt_key(key_path[:-1])} must be a table")
        node[key_path[-1]] = value
        origin[key_path] = f"environment variable {name}"
    unknown_env = sorted(k for k in environ if is_config_variable(k) and k not in known_env)
    if unknown_env:
        raise ConfigError(f"environment: unknown variable {unknown_env[0]} (no such config key)")

    try:
        cfg = Config.model_validate(raw)
    except ValidationError as exc:
        err = exc.errors()[0]
        loc = tuple(str(p) for p in err["loc"])
        # Pydantic reports union/secret sub-types in loc; trim to the real key.
        key_path = loc
        for i in range(len(loc), 0, -1) if err["type"] != "extra_forbidden" else ():
            if any(k[: i] == loc[:i] for k, _ in iter_keys()):
                key_path = loc[:i]
                break
        src = origin.get(key_path, where)
        if err["type"] == "extra_forbidden":
            msg = "unknown key"
        else:
            msg = err["msg"]
            if "input" in err and not isinstance(err["input"], dict) and not _is_secret_path(key_path):
                msg += f" (got {err['input']!r})"
        raise ConfigError(f"{src}: {_fmt_key(key_path)}: {msg}") from None
    cfg.source = where
    cfg._origins = origins
    return cfg


def _is_secret_path(path: tuple[str, ...]) -> bool:
    for key_path, annotation in iter_keys():
        if key_path == path:
            return _is_secret(annotation)
    return False


def masked(cfg: Config) -> dict[str, Any]:
    """The effective config as plain data, secrets replaced by a mask."""

    def walk(model: BaseModel) -> dict[str, Any]:
        out: dict[str, Any] = {}
        for name, field in type(model).model_fields.items():
            if field.exclude:
                continue
            value = getattr(model, name)
            if isinstance(value, BaseModel):
                out[name] = walk(value)
            elif isinstance(value, SecretStr):
                out[name] = "********" if value.get_secret_value() else ""
            elif isinstance(value, list):
                out[name] = ["********" if isinstance(v, SecretStr) else v for v in value]
            else:
                out[name] = value
        return out

    data = walk(cfg)
    url = cfg.db_url
    # The DB URL is secret only for its password: show the rest, it is what operators debug.
    from sqlalchemy.engine import make_url

    try:
        data["db"]["url"] = make_url(url).render_as_string(hide_password=True)
    except Exception:  # noqa: BLE001 - an unparsable URL is reported by check_runtime
        data["db"]["url"] = "********"
    return data


def to_toml(data: dict[str, Any], prefix: str = "", origins: Config | None = None) -> str:
    """Render masked config data as TOML (flat values first, then sub-tables). With ``origins`` (the
    config), each key is followed by a comment saying where its value came from."""
    lines: list[str] = []
    tables = []
    for k, v in data.items():
        if isinstance(v, dict):
            tables.append((k, v))
            continue
        if v is None:
            line = f"# {k} is not set"
        else:
            line = f"{k} = {json.dumps(v, ensure_ascii=False)}"
        if origins is not None:
            path = tuple(prefix.split(".")) + (k,) if prefix else (k,)
            line += f"  # {origins.origin(path)}" if v is not None else f" ({origins.origin(path)})"
        lines.append(line)
    out = ""
    if prefix and lines:
        out += f"[{prefix}]\n"
    out += "\n".join(lines) + ("\n" if lines else "")
    for k, v in tables:
        name = f"{prefix}.{k}" if prefix else k
        sub = to_toml(v, name, origins)
        out += ("\n" if out else "") + sub
    return out
