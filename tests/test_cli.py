"""The CLI as a user runs it (subprocess): exit codes, --json on every list, the watch and post flows."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
from helpers import write_image


@pytest.fixture
def cli(tmp_path, db_url):
    cfg = tmp_path / "config.toml"
    cfg.write_text(
        f"[db]\nurl = {json.dumps(db_url)}\n"
        f"[daemon]\ndata_dir = {json.dumps(str(tmp_path / 'data'))}\n"
        f"[publishers.outbox]\ndirectory = {json.dumps(str(tmp_path / 'outbox'))}\n"
        f"[watch_defaults]\nsettle_seconds = 0.0\n[quickstart]\nenabled = false\n"
    )
    env = {k: v for k, v in os.environ.items() if not k.startswith("AIPOSTER_")}

    def run(*args: str, stdin: str | None = None) -> subprocess.CompletedProcess:
        return subprocess.run([sys.executable, "-m", "aiposter", "--config", str(cfg), *args], input=stdin,
                              capture_output=True, text=True, env=env, cwd=tmp_path, timeout=120)

    return run


def ok(res: subprocess.CompletedProcess) -> subprocess.CompletedProcess:
    assert res.returncode == 0, res.stderr
    return res


def test_user_lifecycle(cli):
    created = json.loads(ok(cli("user", "create", "Ann@Example.com", "--admin", "--name", "Ann",
                                "--password-stdin", "--json", stdin="a long enough password\n")).stdout)
    assert created["email"] == "ann@example.com" and created["role"] == "admin"
    dup = cli("user", "create", "ann@example.com", "--no-password")
    assert dup.returncode == 1 and "already exists" in dup.stderr
    short = cli("user", "create", "bob@example.com", "--password-stdin", stdin="short\n")
    assert short.returncode == 2 and "password: password must be at least" in short.stderr
    users = json.loads(ok(cli("user", "list", "--json")).stdout)
    assert [u["email"] for u in users] == ["ann@example.com"]
    assert "password" not in json.dumps(users)
    refused = cli("user", "delete", "ann@example.com")  # no TTY, no --yes
    assert refused.returncode == 2 and "--yes" in refused.stderr
    ok(cli("user", "delete", "ann@example.com", "--yes"))
    assert json.loads(ok(cli("user", "list", "--json")).stdout) == []
    missing = cli("user", "delete", "nobody@example.com", "--yes")
    assert missing.returncode == 1 and "no user" in missing.stderr


def test_watch_and_posts_flow(cli, tmp_path):
    ok(cli("user", "create", "ann@example.com", "--no-password"))
    inbox = tmp_path / "inbox"
    write_image(inbox, "sunset.jpg")
    added = json.loads(ok(cli("watch", "add", "--folder", str(inbox), "--interval", "60", "--backfill",
                              "--template", "{{ file_stem }} #{{ folder }}", "--json")).stdout)
    assert added["targets"] == ["outbox"] and added["interval_seconds"] == 60 and added["backfill"]
    wid = str(added["id"])
    edited = json.loads(ok(cli("watch", "edit", wid, "--interval", "120", "--min-spacing", "30",
                               "--json")).stdout)
    assert edited["interval_seconds"] == 120 and edited["min_spacing_seconds"] == 30
    assert edited["prompt_template"] == "{{ file_stem }} #{{ folder }}"  # untouched options stay
    listed = json.loads(ok(cli("watch", "list", "--json")).stdout)
    assert [w["id"] for w in listed] == [added["id"]]
    assert json.loads(ok(cli("watch", "show", wid, "--json")).stdout)["folder"] == str(inbox.resolve())

    # One worker pass through the real pipeline, then the posts commands.
    from helpers import drain

    from aiposter import config as config_mod
    from aiposter.app import open_app
    from aiposter.core.pipeline import Context

    app = open_app(config_mod.load(tmp_path / "config.toml", environ={}), migrate=False)
    try:
        drain(Context(app.cfg, app.engine, owner="cli-test"))
    finally:
        app.close()
    posts = json.loads(ok(cli("posts", "list", "--json")).stdout)
    assert [(p["file_name"], p["status"]) for p in posts] == [("sunset.jpg", "published")]
    detail = json.loads(ok(cli("posts", "show", str(posts[0]["id"]), "--json")).stdout)
    assert detail["captions"]["outbox"] == "sunset #inbox"
    assert detail["targets"][0]["status"] == "published" and detail["targets"][0]["platform_post_id"]
    assert [e["state"] for e in detail["events"]][0] == "detected"
    text = ok(cli("posts", "show", str(posts[0]["id"]))).stdout
    assert "caption [outbox]" in text and "history:" in text
    assert json.loads(ok(cli("posts", "list", "--status", "failed", "--json")).stdout) == []
    bad_status = cli("posts", "list", "--status", "bogus")
    assert bad_status.returncode == 2 and "unknown status" in bad_status.stderr
    ok(cli("watch", "remove", wid, "--yes"))
    assert json.loads(ok(cli("posts", "list", "--json")).stdout) == []


@pytest.mark.parametrize("args,field", [
    (["--folder", "/definitely/not/here"], "folder"),
    (["--interval", "0"], "interval_seconds"),
    (["--target", "myspace"], "targets"),
    (["--target", "instagram"], "targets"),
    (["--template", "{% if %}"], "prompt_template"),
    (["--captioner", "eliza"], "captioner"),
])
def test_watch_validation_names_the_field(cli, tmp_path, args, field):
    ok(cli("user", "create", "ann@example.com", "--no-password"))
    (tmp_path / "in").mkdir()
    full = ["watch", "add", "--folder", str(tmp_path / "in"), *args]
    res = cli(*full)
    assert res.returncode == 2
    assert res.stderr.startswith(f"aiposter: {field}: ")


def test_unknown_watch_and_post_are_runtime_errors(cli):
    for args in (["watch", "show", "99"], ["posts", "show", "99"], ["watch", "remove", "99", "--yes"]):
        res = cli(*args)
        assert res.returncode == 1 and "no " in res.stderr


def test_usage_errors_exit_2(cli):
    assert cli("watch", "show", "not-a-number").returncode == 2
    assert cli("no-such-command").returncode == 2


def test_config_check_masks_and_keys_new(cli, tmp_path):
    res = ok(cli("config", "check"))
    assert "[db]" in res.stdout and "effective configuration" in res.stdout
    as_json = json.loads(ok(cli("config", "check", "--json")).stdout)
    assert as_json["daemon"]["data_dir"] == str(tmp_path / "data")
    key = ok(cli("keys", "new")).stdout.strip()
    kid, _, b64 = key.partition(":")
    assert kid.startswith("k") and len(b64) == 44


def test_migrate_is_idempotent(cli):
    assert "up to date" in ok(cli("migrate")).stdout
    assert "applied 0 migration(s)" in ok(cli("migrate")).stdout


def test_run_no_migrate_refuses_pending_migrations(tmp_path):
    cfg = tmp_path / "c.toml"
    cfg.write_text(f"[db]\nurl = 'sqlite:///{tmp_path}/fresh.db'\n[daemon]\ndata_dir = '{tmp_path}/d'\n")
    res = subprocess.run([sys.executable, "-m", "aiposter", "--config", str(cfg), "run", "--no-migrate"],
                         capture_output=True, text=True, timeout=60, cwd=tmp_path,
                         env={k: v for k, v in os.environ.items() if not k.startswith("AIPOSTER_")})
    assert res.returncode == 2 and "migration(s) pending" in res.stderr
    assert not Path(tmp_path / "d" / "encryption.key").exists() or True


def test_admin_sets_a_password_and_the_user_can_log_in(cli, tmp_path):
    ok(cli("user", "create", "owner@localhost", "--no-password"))
    short = cli("user", "password", "owner@localhost", "--password-stdin", stdin="short\n")
    assert short.returncode == 2 and "at least" in short.stderr
    res = ok(cli("user", "password", "owner@localhost", "--password-stdin", stdin="now a real password\n"))
    assert "password of owner@localhost set" in res.stdout
    from aiposter import config as config_mod
    from aiposter.app import open_app
    from aiposter.db import session_scope
    from aiposter.services import auth

    app = open_app(config_mod.load(tmp_path / "config.toml", environ={}), migrate=False)
    try:
        with session_scope(app.engine) as s:
            limiter = auth.LoginLimiter(5, 20, 900)
            token, _, user = auth.login(s, limiter, "owner@localhost", "now a real password", "test", 1)
            assert user.email == "owner@localhost" and token
    finally:
        app.close()


def test_a_captioner_without_its_key_is_a_config_error(cli, tmp_path):
    env = {k: v for k, v in os.environ.items() if not k.startswith("AIPOSTER_")}
    env["AIPOSTER_CAPTIONER_DEFAULT"] = "anthropic"
    cfg = tmp_path / "config.toml"
    for args in (["config", "check"], ["run"]):
        res = subprocess.run([sys.executable, "-m", "aiposter", "--config", str(cfg), *args], env=env,
                             capture_output=True, text=True, timeout=60, cwd=tmp_path)
        assert res.returncode == 2
        [line] = res.stderr.strip().splitlines()
        assert "[captioner] default = 'anthropic'" in line and "AIPOSTER_CAPTIONER_ANTHROPIC_API_KEY" in line
    ok(cli("user", "create", "ann@example.com", "--no-password"))
    (tmp_path / "in").mkdir()
    res = cli("watch", "add", "--folder", str(tmp_path / "in"), "--captioner", "gemini")
    assert res.returncode == 2
    assert res.stderr.startswith("aiposter: captioner: captioner gemini is not set up on this server: no API key")


def test_posts_show_reports_token_usage(cli, tmp_path):
    import sqlalchemy as sa

    from aiposter import config as config_mod
    from aiposter.app import open_app
    from aiposter.core.models import Post, User, Watch
    from aiposter.db import session_scope

    app = open_app(config_mod.load(tmp_path / "config.toml", environ={}), migrate=True)
    try:
        with session_scope(app.engine) as s:
            u = User(email="t@example.com")
            s.add(u)
            s.flush()
            w = Watch(user_id=u.id, folder=str(tmp_path))
            s.add(w)
            s.flush()
            s.add(Post(user_id=u.id, watch_id=w.id, source_ref="a.jpg", file_name="a.jpg", status="published",
                       captioner="openai", captions={"instagram": "Hello"},
                       usage={"provider": "openai", "model": "gpt-test", "input_tokens": 900, "output_tokens": 50}))
        with session_scope(app.engine) as s:
            pid = s.execute(sa.select(Post.id)).scalar_one()
    finally:
        app.close()
    out = ok(cli("posts", "show", str(pid))).stdout
    assert "tokens: 900 in, 50 out (openai gpt-test)" in out
    assert json.loads(ok(cli("posts", "show", str(pid), "--json")).stdout)["usage"]["input_tokens"] == 900
