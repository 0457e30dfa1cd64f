"""Test helpers: image factories and a synchronous pipeline driver (the real daemon code, no threads)."""

from __future__ import annotations

import io
import struct
import time
import zlib
from pathlib import Path

from PIL import Image

from aiposter.core import pipeline
from aiposter.core import queue as workqueue
from aiposter.db import session_scope

GPS_IFD = 0x8825
ORIENTATION = 0x0112


def jpeg_bytes(size=(64, 48), color=(200, 40, 40), orientation: int | None = None, gps: bool = False,
               taken: str | None = None) -> bytes:
    im = Image.new("RGB", size, color)
    # A marker pixel block in the top-left corner, to check orientation after transposition.
    for x in range(min(8, size[0])):
        for y in range(min(8, size[1])):
            im.putpixel((x, y), (0, 0, 255))
    exif = Image.Exif()
    if orientation:
        exif[ORIENTATION] = orientation
    if gps:
        exif[GPS_IFD] = {1: "N", 2: (52.0, 31.0, 12.0), 3: "E", 4: (13.0, 24.0, 36.0)}
    if taken:
        exif.get_ifd(0x8769)[0x9003] = taken
    buf = io.BytesIO()
    im.save(buf, "JPEG", exif=exif.tobytes(), quality=90)
    return buf.getvalue()


def write_image(folder: Path, name: str, data: bytes | None = None, fmt: str = "JPEG", **kw) -> Path:
    """A small image file. Files of different names get different bytes (the same bytes are one photo,
    which a watch posts once), unless ``data`` is given."""
    folder.mkdir(parents=True, exist_ok=True)
    p = folder / name
    if data is None:
        if fmt == "JPEG":
            data = _with_comment(jpeg_bytes(**kw), name)
        else:
            buf = io.BytesIO()
            if fmt == "HEIF":
                import pillow_heif

                pillow_heif.register_heif_opener()
            shade = zlib.crc32(name.encode()) % 200
            Image.new("RGB", kw.get("size", (64, 48)), (10, shade, 10)).save(buf, fmt)
            data = buf.getvalue()
    p.write_bytes(data)
    return p


def _with_comment(jpeg: bytes, text: str) -> bytes:
    """``jpeg`` with a COM segment after SOI: other bytes, same pixels."""
    body = text.encode()[:60000]
    return jpeg[:2] + b"\xff\xfe" + struct.pack(">H", len(body) + 2) + body + jpeg[2:]


def drain(ctx, max_rounds: int = 50) -> int:
    """Poll due watches and run due post steps until nothing is due. Returns rounds run."""
    for rounds in range(1, max_rounds + 1):
        with session_scope(ctx.engine) as s:
            watch_ids = workqueue.claim_watches(s, ctx.owner, 30, 100)
        for wid in watch_ids:
            pipeline.poll_watch(ctx, wid)
        with session_scope(ctx.engine) as s:
            post_ids = workqueue.claim_posts(s, ctx.owner, 30, 100)
        for pid in post_ids:
            pipeline.process_post(ctx, pid)
        if not watch_ids and not post_ids:
            return rounds
    return max_rounds


def wait_for(predicate, timeout: float = 30.0, interval: float = 0.05) -> bool:
    """Poll ``predicate`` until it is true or ``timeout`` seconds pass; True when it came true in time."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if predicate():
            return True
        time.sleep(interval)
    return False
