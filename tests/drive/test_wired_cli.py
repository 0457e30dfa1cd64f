"""The Drive CLI: `aiposter connect google` from a headless server (paste the redirected address back),
`aiposter connections`, and `aiposter watch add --drive URL --connection ID`."""

from __future__ import annotations

import io
import json
import logging
import os
import re
import sys

import click.testing
import pytest
import typer.main
from fakes.drive import CLIENT_ID, CLIENT_SECRET, FakeDrive
from helpers import jpeg_bytes
from typer.testing import CliRunner

from aiposter import cli


@pytest.fixture(autouse=True)
def _restore_logging():
    root = logging.getLogger()
    handlers, level = root.handlers[:], root.level
    yield
    root.handlers[:] = handlers
    root.setLevel(level)


@pytest.fixture
def drive():
    f = FakeDrive()
    yield f
    f.close()


class Browser(io.RawIOBase):
    """Stdin for `connect google`: when the command asks, "open" the link it printed on the fake's consent
    page and type back the address Google redirected to (as a person on another machine would)."""

    def __init__(self, fake: FakeDrive):
        self.fake, self.pending = fake, b""

    def readable(self):
        return True

    def readinto(self, b):
        if len(b) == 0:
            return 0
        if not self.pending:
            printed = sys.stdout.buffer.getvalue().decode() if hasattr(sys.stdout.buffer, "getvalue") else ""
            link = re.search(r"(http://\S+/o/oauth2/auth\S+)", printed).group(1)
            code, state = self.fake.approve(link)
            self.pending = f"https://poster.test/api/v1/connections/google_drive/callback?state={state}" \
                           f"&code={code}&scope=x\n".encode()
        n = min(len(b), len(self.pending))
        b[:n], self.pending = self.pending[:n], self.pending[n:]
        return n


def invoke(*args, input=None):
    env = {k: None for k in os.environ if k.startswith("AIPOSTER_")}
    if input is None:
        return CliRunner().invoke(cli.app, list(args), env=env, catch_exceptions=False)
    # click's runner takes a stream as stdin (typer's wants bytes up front)
    return click.testing.CliRunner().invoke(typer.main.get_command(cli.app), list(args), env=env, input=input,
                                            catch_exceptions=False)


def test_connect_google_headless_then_watch_add_by_link(tmp_path, db_url, drive, monkeypatch):
    monkeypatch.setenv("OAUTHLIB_INSECURE_TRANSPORT", "1")
    monkeypatch.chdir(tmp_path)
    conf = tmp_path / "aiposter.toml"
    conf.write_text(
        f"[db]\nurl = {json.dumps(db_url)}\n[daemon]\ndata_dir = {json.dumps(str(tmp_path / 'data'))}\n"
        "[quickstart]\nenabled = false\n[api]\npublic_url = \"https://poster.test\"\n"
        f"[oauth.google]\nclient_id = {json.dumps(CLIENT_ID)}\nclient_secret = {json.dumps(CLIENT_SECRET)}\n"
        f"auth_uri = {json.dumps(drive.auth_uri)}\ntoken_uri = {json.dumps(drive.token_uri)}\n"
        f"drive_api_url = {json.dumps(drive.api_url.rstrip('/'))}\nrevoke_uri = {json.dumps(drive.revoke_uri)}\n")
    c = ["--config", str(conf)]
    assert invoke(*c, "migrate").exit_code == 0
    assert invoke(*c, "user", "create", "ann@example.com", "--no-password").exit_code == 0

    res = invoke(*c, "connect", "google", "--user", "ann@example.com", input=Browser(drive))
    assert res.exit_code == 0, res.output
    assert "/o/oauth2/auth?" in res.stdout and "connected Google Drive account" in res.stdout
    cid = int(re.search(r"as connection (\d+)", res.stdout).group(1))

    listed = json.loads(invoke(*c, "connections", "--json").stdout)
    assert [(r["id"], r["provider"], r["status"]) for r in listed] == [(cid, "google_drive", "active")]

    folder = drive.add_folder("Holiday photos")
    drive.add_file("there.jpg", folder, content=jpeg_bytes())
    bad = invoke(*c, "watch", "add", "--drive", "https://drive.google.com/file/d/1abcdefghijk/view",
                 "--connection", str(cid))
    assert bad.exit_code == 2 and "single file" in bad.stderr
    res = invoke(*c, "watch", "add", "--drive", f"https://drive.google.com/drive/folders/{folder}",
                 "--connection", str(cid), "--subfolders", "--json")
    assert res.exit_code == 0, res.output
    w = json.loads(res.stdout)
    assert (w["source"], w["folder"], w["folder_name"], w["include_subfolders"], w["baseline_done"]) == (
        "google_drive", folder, "Holiday photos", True, True)
