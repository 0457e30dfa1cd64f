"""Review, schedule and publish-now from the CLI (in process), on the real pipeline."""

from __future__ import annotations

import json

from helpers import drain, write_image
from test_cli_inprocess import _restore_logging, invoke, write_config  # noqa: F401 - an autouse fixture

from aiposter import config as config_mod
from aiposter.app import open_app
from aiposter.core.pipeline import Context


def test_cli_review_edit_approve_and_watch_options(tmp_path, db_url):
    cfg_path = write_config(tmp_path, db_url)
    with cfg_path.open("a") as fh:
        fh.write(f"[watch_defaults]\nsettle_seconds = 0\n[publishers.outbox]\ndirectory = \"{tmp_path / 'out'}\"\n")
    c = ["--config", str(cfg_path)]
    inbox = tmp_path / "inbox"
    inbox.mkdir()
    assert invoke("user", "create", "ann@example.com", "--no-password", *c).exit_code == 0
    res = invoke("watch", "add", "--folder", str(inbox), "--backfill", "--approval", "review", "--schedule",
                 "mon-sun 00:00-24:00", "--timezone", "Europe/Berlin", "--daily-cap", "5", "--json", *c)
    assert res.exit_code == 0, res.output
    w = json.loads(res.stdout)
    assert (w["approval"], w["schedule_tz"], w["daily_cap"]) == ("review", "Europe/Berlin", 5)
    bad = invoke("watch", "edit", str(w["id"]), "--schedule", "someday 9:00-10:00", *c)
    assert bad.exit_code == 2 and "schedule" in bad.output

    write_image(inbox, "a.jpg")
    cfg = config_mod.load(cfg_path)
    app = open_app(cfg, migrate=False)
    try:
        ctx = Context(cfg, app.engine, owner="cli-test", keyring=app.keyring, media=app.media)
        drain(ctx)
        listed = invoke("posts", "review", "--json", *c)
        (post,) = json.loads(listed.stdout)
        pid = str(post["id"])
        shown = json.loads(invoke("posts", "review", pid, "--json", *c).stdout)
        tid = shown["targets"][0]["id"]
        too_long = invoke("posts", "edit", pid, "--caption", f"{tid}=" + "x" * 3000, *c)
        assert too_long.exit_code == 2 and "3000" in too_long.output and "500" in too_long.output
        ok = invoke("posts", "edit", pid, "--caption", "outbox=Hello from the CLI", "--alt-text", "A red square", *c)
        assert ok.exit_code == 0, ok.output
        assert invoke("posts", "publish-now", pid, *c).exit_code == 1  # in review: approve first
        assert invoke("posts", "approve", pid, *c).exit_code == 0
        drain(ctx)
        detail = json.loads(invoke("posts", "show", pid, "--json", *c).stdout)
        assert detail["status"] == "published"
        assert detail["targets"][0]["caption"] == "Hello from the CLI"
        assert any(e["actor"] == "operator (cli)" and "approved" in e["message"] for e in detail["events"])
        assert invoke("posts", "reject", pid, *c).exit_code == 1  # no longer in review
    finally:
        app.close()
