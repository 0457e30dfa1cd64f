"""Image types chosen per watch (``image_types``), on SQLite and PostgreSQL: the API, the Drive feed (an image
of a type the watch does not take is recorded as skipped with the reason, never posted), the pipeline's
check of a local folder's files by their decoded format, the CLI, the web form and the config default."""

from __future__ import annotations

import io
import json

from helpers import jpeg_bytes
from PIL import Image
from sqlmodel import select

from aiposter.core import image_types, states
from aiposter.core.models import SourceFile
from aiposter.db import session_scope

from . import test_wired

drive, env = test_wired.drive, test_wired.env  # the fixtures: a fake Drive, and an install connected to it


def png_bytes(color=(10, 200, 10)) -> bytes:
    buf = io.BytesIO()
    Image.new("RGB", (40, 30), color).save(buf, format="PNG")
    return buf.getvalue()


def gif_bytes() -> bytes:
    buf = io.BytesIO()
    Image.new("P", (20, 20), 3).save(buf, format="GIF")
    return buf.getvalue()


def _source_file(env, wid: int, ref: str) -> SourceFile | None:
    with session_scope(env.app.engine) as s:
        return s.exec(select(SourceFile).where(SourceFile.watch_id == wid, SourceFile.ref == ref)).first()


def test_parse_names_and_mime_types():
    assert image_types.parse(["JPG, png", "heic"]) == ("image/jpeg", "image/png", "image/heic", "image/heif")
    assert image_types.parse(["image/webp image/jpeg"]) == ("image/jpeg", "image/webp")
    assert image_types.parse([""]) == ()
    for bad, says in (("bmp", "unknown image type 'bmp'"), ("application/pdf", "is not an image type")):
        try:
            image_types.parse([bad])
        except ValueError as exc:
            assert says in str(exc)
        else:
            raise AssertionError(bad)


def test_api_validates_and_shows_image_types(env, drive):
    cid = env.connect()
    folder = drive.add_folder("Photos")
    for bad in (["bmp"], ["application/pdf"], ["jpeg", "text/plain"]):
        r = env.add_watch(folder, cid, image_types=bad)
        assert r.status_code == 422, r.text
        assert r.json()["error"]["field"] == "image_types", r.text
    r = env.add_watch(folder, cid, image_types=["jpg", "heic"])
    assert r.status_code == 201, r.text
    assert r.json()["image_types"] == ["image/jpeg", "image/heic", "image/heif"]
    wid = r.json()["id"]
    listed = env.client.get("/api/v1/watches", headers=env.headers).json()
    assert [w["image_types"] for w in listed] == [["image/jpeg", "image/heic", "image/heif"]]
    r = env.client.patch(f"/api/v1/watches/{wid}", headers=env.headers, json={"image_types": []})
    assert r.status_code == 200 and r.json()["image_types"] is None  # back to the source's default


def test_drive_posts_only_the_chosen_types_and_says_why_others_are_not(env, drive):
    cid = env.connect()
    folder = drive.add_folder("Photos")
    only_jpeg = env.add_watch(folder, cid, image_types=["jpeg"]).json()["id"]
    other = drive.add_folder("Other")
    default = env.add_watch(other, cid).json()["id"]
    jpg = drive.add_file("a.jpg", folder, content=jpeg_bytes(color=(1, 2, 3)))
    png = drive.add_file("b.png", folder, content=png_bytes(), mime="image/png")
    png2 = drive.add_file("c.png", other, content=png_bytes((9, 9, 9)), mime="image/png")
    gif = drive.add_file("d.gif", other, content=gif_bytes(), mime="image/gif")
    [res] = env.poll()
    assert (res.queued, res.skipped, res.error) == (2, 2, None)
    env.process()
    assert sorted((p.watch_id, p.file_name, p.status) for p in env.posts()) == [
        (only_jpeg, "a.jpg", states.PUBLISHED), (default, "c.png", states.PUBLISHED)]
    assert len(env.published()) == 2
    sf = _source_file(env, only_jpeg, png)
    assert sf.status == states.SF_SKIPPED
    assert sf.reason == "image/png is not one of this watch's image types (jpeg); not posted"
    assert "image/gif is not one of this watch's image types (jpeg, png, webp, heic, heif)" in \
        _source_file(env, default, gif).reason
    assert _source_file(env, only_jpeg, jpg).status == states.SF_QUEUED and _source_file(env, default, png2)
    drive.rename(png, "renamed.png")  # seen again: recorded once, still not posted
    [res] = env.poll()
    assert (res.queued, res.skipped) == (0, 0)

    # Taking PNG from now on: what is already in the folder is the baseline (not posted when Drive next
    # reports it); a new PNG is posted.
    r = env.client.patch(f"/api/v1/watches/{only_jpeg}", headers=env.headers, json={"image_types": ["jpeg", "png"]})
    assert r.status_code == 200 and r.json()["image_types"] == ["image/jpeg", "image/png"]
    drive.rename(png, "again.png")
    drive.add_file("e.png", folder, content=png_bytes((70, 70, 70)), mime="image/png")
    [res] = env.poll()
    assert (res.queued, res.error) == (1, None)
    env.process()
    assert sorted(p.file_name for p in env.posts() if p.watch_id == only_jpeg) == ["a.jpg", "e.png"]


def test_local_folder_takes_the_config_default_and_skips_other_decoded_formats(make_ctx, tmp_path):
    from helpers import drain, write_image

    from aiposter.core.models import Post
    from aiposter.services import users, watches

    ctx = make_ctx(watch_defaults={"image_types": ["png", "heic"]})
    inbox = tmp_path / "inbox"
    inbox.mkdir()
    with session_scope(ctx.engine) as s:
        owner = users.create_user(s, "ann@example.com", "correct horse battery")
        w = watches.create_watch(s, ctx.cfg, owner, watches.WatchSpec(folder=str(inbox)), allow_any_folder=True)
        wid = w.id
        assert watches.watch_dict(s, w)["image_types"] == ["image/png", "image/heic", "image/heif"]
    drain(ctx)
    write_image(inbox, "a.png", fmt="PNG")
    write_image(inbox, "b.jpg")
    write_image(inbox, "c.heic", fmt="HEIF")
    (inbox / "d.png").write_bytes(jpeg_bytes())  # named .png, but its bytes are a JPEG: the bytes decide
    with session_scope(ctx.engine) as s:
        s.get(watches.Watch, wid).next_poll_at = watches.utcnow()
    drain(ctx)
    with session_scope(ctx.engine) as s:
        got = {p.file_name: (p.status, p.last_error) for p in s.exec(select(Post))}
    assert got["a.png"] == (states.PUBLISHED, None) and got["c.heic"][0] == states.PUBLISHED
    for name in ("b.jpg", "d.png"):
        assert got[name] == (states.SKIPPED, "not posted: image/jpeg is not one of this watch's image types "
                                             "(png, heic, heif)")


def test_config_refuses_an_unknown_default_type(tmp_path, db_url):
    from conftest import make_config

    from aiposter.config import ConfigError

    try:
        make_config(tmp_path, db_url, watch_defaults={"image_types": ["bmp"]})
    except (ConfigError, ValueError) as exc:
        assert "image_types" in str(exc) and "bmp" in str(exc)
    else:
        raise AssertionError("accepted")


def test_cli_watch_add_and_edit_image_types(tmp_path, db_url):
    from test_cli_inprocess import invoke, write_config

    cfg = write_config(tmp_path, db_url)
    folder = tmp_path / "photos"
    folder.mkdir()
    assert invoke("migrate", "--config", str(cfg)).exit_code == 0
    assert invoke("user", "create", "ann@example.com", "--no-password", "--config", str(cfg)).exit_code == 0
    bad = invoke("watch", "add", "--folder", str(folder), "--image-types", "jpeg,bmp", "--config", str(cfg))
    assert bad.exit_code == 2 and "image_types: unknown image type 'bmp'" in bad.stderr
    res = invoke("watch", "add", "--folder", str(folder), "--image-types", "jpeg, webp", "--json", "--config", str(cfg))
    assert res.exit_code == 0, res.output
    wid = json.loads(res.stdout)["id"]
    assert json.loads(res.stdout)["image_types"] == ["image/jpeg", "image/webp"]
    res = invoke("watch", "edit", str(wid), "--image-types", "", "--json", "--config", str(cfg))
    assert res.exit_code == 0 and json.loads(res.stdout)["image_types"] is None
    res = invoke("watch", "edit", str(wid), "--image-types", "text/plain", "--config", str(cfg))
    assert res.exit_code == 2 and "is not an image type" in res.stderr
