"""Property run over the image decoder (issue 8, done-when): hypothesis-made PNG, JPEG and HEIC headers and
bytes give either a prepared JPEG or the decoder's clear ImageError; never another exception, never a hang,
and never a decode that takes more memory than the documented peak.

The decoding runs in one child process (the process boundary is the point: its peak RSS is measured, reset
between cases through /proc/self/clear_refs, and a hang is a child that does not answer in time).
"""

from __future__ import annotations

import io
import json
import os
import select
import struct
import subprocess
import sys
import tempfile
import zlib
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from aiposter import images

MAX_PIXELS = 4_000_000
# The documented peak of one decode (README, "Image memory"): the largest per-pixel estimate times the
# pixel limit, plus the decoders' fixed working memory.
FIXED_MB = 48
PEAK_LIMIT_MB = MAX_PIXELS * max(images.BYTES_PER_PIXEL.values()) / 2**20 + FIXED_MB
CASE_SECONDS = 30

CHILD = r"""
import json, sys, traceback
from pathlib import Path
from aiposter import images
from aiposter.core.errors import ImageError

def status(key):
    for line in open("/proc/self/status"):
        if line.startswith(key):
            return int(line.split()[1]) / 1024

images.prepare(Path(sys.argv[1]), Path(sys.argv[1] + ".out"), max_pixels=10_000, max_edge=64)  # warm up
for line in sys.stdin:
    path = Path(line.strip())
    with open("/proc/self/clear_refs", "w") as fh:
        fh.write("5")  # reset VmHWM to the current RSS
    before = status("VmRSS:")
    try:
        p = images.prepare(path, path.with_suffix(".out"), max_pixels=int(sys.argv[2]), max_edge=512)
        result = {"ok": f"{p.width}x{p.height}"}
    except ImageError as exc:
        result = {"error": exc.code, "message": str(exc)}
    except BaseException:
        result = {"crash": traceback.format_exc()}
    result["peak_mb"] = status("VmHWM:") - before
    print(json.dumps(result), flush=True)
"""


@pytest.fixture(scope="module")
def decoder(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("fuzz")
    seed = tmp / "seed.png"
    from PIL import Image

    Image.new("RGB", (8, 8)).save(seed)
    proc = subprocess.Popen([sys.executable, "-c", CHILD, str(seed), str(MAX_PIXELS)], stdin=subprocess.PIPE,
                            stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True)

    def decode(data: bytes) -> dict:
        fd, name = tempfile.mkstemp(dir=tmp)
        with os.fdopen(fd, "wb") as fh:
            fh.write(data)
        try:
            proc.stdin.write(name + "\n")
            proc.stdin.flush()
            ready, _, _ = select.select([proc.stdout], [], [], CASE_SECONDS)
            assert ready, f"the decoder hung for {CASE_SECONDS}s on {data[:64]!r}"
            line = proc.stdout.readline()
            assert line, "the decoder process died"
            return json.loads(line)
        finally:
            Path(name).unlink(missing_ok=True)
            Path(name).with_suffix(".out").unlink(missing_ok=True)

    yield decode
    proc.kill()
    proc.wait()


def check(result: dict) -> None:
    assert "crash" not in result, result["crash"]
    assert result["peak_mb"] <= PEAK_LIMIT_MB, result


def _chunk(kind: bytes, body: bytes) -> bytes:
    return struct.pack(">I", len(body)) + kind + body + struct.pack(">I", zlib.crc32(kind + body))


@st.composite
def pngs(draw):
    # Any size, or one near the pixel limit (the memory case: a tiny file that decodes to max_pixels).
    w = draw(st.one_of(st.integers(1, 6000), st.integers(1900, 2100)))
    h = draw(st.one_of(st.integers(1, 6000), st.integers(1900, 2100)))
    depth, color = draw(st.sampled_from([(8, 0), (16, 0), (8, 2), (16, 2), (1, 3), (8, 3), (8, 4), (8, 6),
                                         (16, 6), (3, 2), (8, 7)]))
    interlace = draw(st.sampled_from([0, 1]))
    out = b"\x89PNG\r\n\x1a\n" + _chunk(b"IHDR", struct.pack(">IIBBBBB", w, h, depth, color, 0, 0, interlace))
    if color == 3:
        out += _chunk(b"PLTE", draw(st.binary(min_size=0, max_size=30)))
    if draw(st.booleans()):
        out += _chunk(b"tRNS", draw(st.binary(max_size=8)))
    bands = {0: 1, 2: 3, 3: 1, 4: 2, 6: 4}.get(color, 3)
    row = 1 + (w * bands * depth + 7) // 8
    rows = h if w * h <= 2 * MAX_PIXELS and draw(st.integers(0, 3)) else draw(st.integers(0, 50))
    comp = zlib.compressobj(1)
    zero = b"\0" * row
    idat = b"".join(comp.compress(zero) for _ in range(rows)) + comp.flush()
    if draw(st.integers(0, 3)) == 0:
        idat = idat[: draw(st.integers(0, len(idat)))]
    return out + _chunk(b"IDAT", idat) + _chunk(b"IEND", b"")


def _jpeg(progressive: bool, mode: str) -> bytes:
    from PIL import Image

    buf = io.BytesIO()
    Image.new(mode, (48, 32), 128 if mode == "L" else (10, 100, 200)[: len(mode)] + (0,) * (len(mode) - 3)
              ).save(buf, "JPEG", progressive=progressive, quality=70)
    return buf.getvalue()


JPEGS = {(p, m): _jpeg(p, m) for p in (False, True) for m in ("RGB", "L", "CMYK")}


@st.composite
def jpegs(draw):
    progressive, mode = draw(st.sampled_from(sorted(JPEGS)))
    data = bytearray(JPEGS[(progressive, mode)])
    sof = data.find(b"\xff\xc2" if progressive else b"\xff\xc0")
    # The frame header's height and width (what a bomb lies about), then a few random byte changes.
    struct.pack_into(">HH", data, sof + 5, draw(st.integers(0, 65535)), draw(st.integers(0, 65535)))
    for _ in range(draw(st.integers(0, 3))):
        data[draw(st.integers(sof, len(data) - 1))] = draw(st.integers(0, 255))
    if draw(st.integers(0, 3)) == 0:
        data = data[: draw(st.integers(2, len(data)))]
    return bytes(data)


def _heic() -> bytes:
    import pillow_heif
    from PIL import Image

    pillow_heif.register_heif_opener()
    buf = io.BytesIO()
    Image.new("RGB", (64, 48), (200, 30, 30)).save(buf, "HEIF", quality=50)
    return buf.getvalue()


HEIC = _heic()


@st.composite
def heics(draw):
    data = bytearray(HEIC)
    ispe = data.find(b"ispe")
    if ispe > 0 and draw(st.integers(0, 2)) == 0:  # the image spatial extents: the declared size
        struct.pack_into(">II", data, ispe + 8, draw(st.integers(0, 200_000)), draw(st.integers(0, 200_000)))
    for _ in range(draw(st.integers(0, 3))):
        data[draw(st.integers(32, len(data) - 1))] = draw(st.integers(0, 255))
    if draw(st.integers(0, 3)) == 0:
        data = data[: draw(st.integers(0, len(data)))]
    return bytes(data)


FUZZ = settings(max_examples=40, deadline=None, derandomize=True,
                suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large,
                                       HealthCheck.function_scoped_fixture])


@FUZZ
@given(data=pngs())
def test_png(decoder, data):
    check(decoder(data))


@FUZZ
@given(data=jpegs())
def test_jpeg(decoder, data):
    check(decoder(data))


@FUZZ
@given(data=heics())
def test_heic(decoder, data):
    check(decoder(data))


def test_a_png_just_under_the_limit_stays_under_the_documented_peak(decoder):
    """The finding's own case, scaled: a few hundred KB of PNG that decodes to max_pixels of RGBA."""
    w = h = int(MAX_PIXELS**0.5) - 1
    comp = zlib.compressobj(9)
    row = b"\0" * (1 + 4 * w)
    idat = b"".join(comp.compress(row) for _ in range(h)) + comp.flush()
    data = (b"\x89PNG\r\n\x1a\n" + _chunk(b"IHDR", struct.pack(">IIBBBBB", w, h, 8, 6, 0, 0, 0))
            + _chunk(b"IDAT", idat) + _chunk(b"IEND", b""))
    result = decoder(data)
    check(result)
    assert result.get("ok"), result
