"""Configuration: loading, overrides, secrets from files, and errors that name the key and the file."""

from __future__ import annotations

import re
import tomllib
from pathlib import Path

import pytest

from aiposter import config
from aiposter.config import ConfigError

ROOT = Path(__file__).resolve().parent.parent
EXAMPLE = ROOT / "config.example.toml"


def write(tmp_path: Path, text: str) -> Path:
    p = tmp_path / "config.toml"
    p.write_text(text)
    return p


def test_no_file_gives_builtin_defaults(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    cfg = config.load(None, environ={})
    assert cfg.source == "built-in defaults"
    assert cfg.db_url == "sqlite:///./data/aiposter.db"
    assert cfg.quickstart.enabled is True


def test_example_documents_every_key_with_its_default():
    """config.example.toml shows every key of the schema, with the built-in default as its value
    (secrets, which have no default, appear as comments)."""
    text = EXAMPLE.read_text()
    data = tomllib.loads(text)
    defaults = config.Config()
    for path, annotation in config.iter_keys():
        node = data
        for part in path[:-1]:
            node = node[part]
        value = defaults
        for part in path:
            value = getattr(value, part)
        if (config._is_secret(annotation) or value is None) and path[-1] not in node:
            # Secrets and unset-by-default keys are shown as comments.
            assert re.search(rf"^# {path[-1]} = ", text, re.M), f"{path} is not documented"
            continue
        assert path[-1] in node, f"{'.'.join(path)} is missing from config.example.toml"
        if hasattr(value, "get_secret_value"):
            value = value.get_secret_value()
        assert node[path[-1]] == value, f"{'.'.join(path)}: example {node[path[-1]]!r} != default {value!r}"


def test_example_loads(tmp_path):
    cfg = config.load(EXAMPLE, environ={})
    assert cfg.source == str(EXAMPLE)


def test_unknown_key_names_key_and_file(tmp_path):
    p = write(tmp_path, "[db]\nurll = 'sqlite:///x.db'\n")
    with pytest.raises(ConfigError) as e:
        config.load(p, environ={})
    assert str(e.value) == f"{p}: [db] urll: unknown key"


def test_unknown_section(tmp_path):
    p = write(tmp_path, "[dbx]\nurl = 'x'\n")
    with pytest.raises(ConfigError, match=r"dbx: unknown key"):
        config.load(p, environ={})


def test_wrong_type_names_key_and_value(tmp_path):
    p = write(tmp_path, "[daemon]\nworkers = 'four'\n")
    with pytest.raises(ConfigError) as e:
        config.load(p, environ={})
    msg = str(e.value)
    assert msg.startswith(f"{p}: [daemon] workers:") and "'four'" in msg


def test_strings_are_not_coerced_to_numbers(tmp_path):
    p = write(tmp_path, "[api]\nport = '8080'\n")
    with pytest.raises(ConfigError, match=r"\[api\] port"):
        config.load(p, environ={})


def test_out_of_range(tmp_path):
    p = write(tmp_path, "[daemon]\nworkers = 0\n")
    with pytest.raises(ConfigError, match=r"\[daemon\] workers: Input should be greater than or equal to 1"):
        config.load(p, environ={})


def test_invalid_toml(tmp_path):
    p = write(tmp_path, "[db\n")
    with pytest.raises(ConfigError, match="not valid TOML"):
        config.load(p, environ={})


def test_missing_explicit_file(tmp_path):
    with pytest.raises(ConfigError, match="does not exist"):
        config.load(tmp_path / "nope.toml", environ={})


def test_env_file_variable_missing(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    with pytest.raises(ConfigError, match=r"AIPOSTER_CONFIG"):
        config.load(None, environ={"AIPOSTER_CONFIG": str(tmp_path / "missing.toml")})


def test_env_overrides_file_with_types(tmp_path):
    p = write(tmp_path, "[db]\nurl = 'sqlite:///a.db'\n[daemon]\nworkers = 2\n")
    cfg = config.load(p, environ={"AIPOSTER_DB_URL": "postgresql+psycopg://u@h/d",
                                  "AIPOSTER_DAEMON_WORKERS": "7", "AIPOSTER_LOG_FORMAT": "json",
                                  "AIPOSTER_QUICKSTART_ENABLED": "false"})
    assert cfg.db_url == "postgresql+psycopg://u@h/d"
    assert cfg.daemon.workers == 7
    assert cfg.log.format == "json"
    assert cfg.quickstart.enabled is False


def test_env_wrong_type_names_the_variable(tmp_path):
    with pytest.raises(ConfigError) as e:
        config.load(write(tmp_path, ""), environ={"AIPOSTER_DAEMON_WORKERS": "many"})
    assert str(e.value).startswith("environment variable AIPOSTER_DAEMON_WORKERS: [daemon] workers")


def test_unknown_env_variable_is_an_error(tmp_path):
    with pytest.raises(ConfigError, match="AIPOSTER_DB_URLL"):
        config.load(write(tmp_path, ""), environ={"AIPOSTER_DB_URLL": "x"})


def test_secret_from_file_in_toml_and_env(tmp_path):
    secret = tmp_path / "openai.key"
    secret.write_text("sk-from-file\n")
    p = write(tmp_path, f"[captioner.openai]\napi_key_file = '{secret}'\n")
    cfg = config.load(p, environ={})
    assert cfg.captioner.openai.api_key.get_secret_value() == "sk-from-file"
    dbfile = tmp_path / "db.url"
    dbfile.write_text("postgresql+psycopg://app:s3cret@db/aiposter")
    cfg = config.load(p, environ={"AIPOSTER_DB_URL_FILE": str(dbfile)})
    assert cfg.db_url.endswith("@db/aiposter")


def test_missing_secret_file(tmp_path):
    p = write(tmp_path, f"[captioner.anthropic]\napi_key_file = '{tmp_path}/none'\n")
    with pytest.raises(ConfigError, match=r"api_key_file: cannot read secret file"):
        config.load(p, environ={})


def test_masked_output_hides_secrets(tmp_path):
    p = write(tmp_path, "[db]\nurl = 'postgresql+psycopg://app:hunter2@db/x'\n"
                        "[captioner.openai]\napi_key = 'sk-very-secret'\n")
    cfg = config.load(p, environ={})
    rendered = config.to_toml(config.masked(cfg))
    assert "hunter2" not in rendered and "sk-very-secret" not in rendered
    assert "postgresql+psycopg://app:***@db/x" in rendered
    assert 'api_key = "********"' in rendered
    tomllib.loads(rendered)  # the printed config is itself valid TOML


# ---------------------------------------------------------------- the config's own variables, and origins


def test_only_the_configs_own_variables_are_checked(tmp_path):
    """AIPOSTER_TEST_PG (which the README asks for) or an orchestrator's AIPOSTER_* variable does not stop
    the daemon; a typo in a section's variable still does."""
    p = write(tmp_path, "")
    cfg = config.load(p, environ={"AIPOSTER_TEST_PG": "postgresql+psycopg://x@y/z", "AIPOSTER_VERSION": "1",
                                  "AIPOSTER_DB_URL": "sqlite:///x.db"})
    assert cfg.db_url == "sqlite:///x.db"
    for typo in ("AIPOSTER_DB_URLL", "AIPOSTER_CAPTIONER_OPENAI_APIKEY", "AIPOSTER_WATCH_DEFAULTS_INTERVAL"):
        with pytest.raises(ConfigError, match=typo):
            config.load(p, environ={typo: "1"})


def test_each_value_says_where_it_came_from(tmp_path):
    secret = tmp_path / "key"
    secret.write_text("sk-file")
    envsecret = tmp_path / "envkey"
    envsecret.write_text("sk-env-file")
    p = write(tmp_path, f"[db]\nurl = 'sqlite:///file.db'\n[daemon]\nworkers = 2\n"
                        f"[captioner.openai]\napi_key_file = '{secret}'\n")
    cfg = config.load(p, environ={"AIPOSTER_DB_URL": "sqlite:///env.db", "AIPOSTER_LOG_FORMAT": "json",
                                  "AIPOSTER_CAPTIONER_GEMINI_API_KEY_FILE": str(envsecret)})
    assert cfg.origin(("db", "url")) == f"environment variable AIPOSTER_DB_URL, over the file {p}"
    assert cfg.origin(("log", "format")) == "environment variable AIPOSTER_LOG_FORMAT"
    assert cfg.origin(("daemon", "workers")) == f"file {p}"
    assert cfg.origin(("daemon", "tick_seconds")) == "default"
    assert cfg.origin(("captioner", "openai", "api_key")) == f"secret file {secret} (api_key_file in {p})"
    assert cfg.origin(("captioner", "gemini", "api_key")) == \
        f"secret file {envsecret} (environment variable AIPOSTER_CAPTIONER_GEMINI_API_KEY_FILE)"
    shown = config.to_toml(config.masked(cfg), origins=cfg)
    assert f'url = "sqlite:///env.db"  # environment variable AIPOSTER_DB_URL, over the file {p}' in shown
    assert f"workers = 2  # file {p}" in shown and "tick_seconds = 1.0  # default" in shown
    assert "sk-" not in shown
    tomllib.loads(shown)
