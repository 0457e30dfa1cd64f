"""Image preparation: the only place that decodes untrusted image bytes.

Every image is decoded once, under a pixel limit and a per-process memory budget, and written out as a
plain RGB JPEG sized for every destination, with nothing but pixels in it:

* **Memory is bounded before decoding.** The header gives the size; what would be decoded must fit
  ``images.max_pixels``. JPEG decodes straight at 1/2, 1/4 or 1/8 scale (libjpeg's DCT scaling, Pillow's
  ``draft``), so a 12 MP camera JPEG is decoded as 3 MP and a 200 MP phone JPEG as 12.5 MP; other formats
  (PNG, HEIC, WebP, TIFF...) decode at full size. Each decode first reserves its estimated bytes from a
  per-process :class:`DecodeBudget`, so several workers never hold several large decodes at once.
* **Work is done on the small image.** The decoded image is box-reduced, composited on white if it has
  alpha, resized to ``images.max_edge`` (the largest size any destination takes: Facebook 2048 px), then
  rotated per EXIF orientation and converted to sRGB: every step after the decode sees about 3 MP.
* **No metadata goes out.** The JPEG is encoded from a fresh image object: no EXIF (GPS, camera), no XMP,
  no IPTC, no comment (COM), no ICC profile (colours are converted to sRGB with LittleCMS first, so
  dropping the profile keeps them right). The capture date is read before the metadata goes.

* **Each destination gets an image it takes.** Instagram takes aspect ratios 4:5 to 1.91:1 and Threads
  1:10 to 10:1 (Facebook any): for a destination the photo does not fit, a second JPEG is made from the
  same decoded pixels (no second decode), padded onto a blurred copy of itself or cropped about its
  centre, as the watch's ``fit`` says (:func:`fit_aspect`).

HEIC/HEIF decode through pillow-heif (libheif).
"""

from __future__ import annotations

import io
import logging
import math
import os
import threading
import warnings
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from struct import error as struct_error

from PIL import Image, ImageCms, ImageFilter, UnidentifiedImageError

from aiposter.core.errors import ImageError

try:  # HEIC/HEIF support is a dependency, but keep the module importable without it
    import pillow_heif

    pillow_heif.register_heif_opener()
    # libheif decodes the tiles of a grid image (what phones write) on this many threads.
    pillow_heif.options.DECODE_THREADS = max(1, min(4, os.cpu_count() or 1))
    HEIF = True
except ImportError:  # pragma: no cover
    HEIF = False

log = logging.getLogger("aiposter.images")

EXIF_DATETIME_ORIGINAL = 0x9003
EXIF_DATETIME = 0x0132
EXIF_IFD = 0x8769
EXIF_ORIENTATION = 0x0112

# A baseline JPEG is decoded scaled down, so its stored size may exceed max_pixels by this factor (a 1/4
# scale decode has 1/16 of the pixels): 200 MP phone photos and 100-150 MP medium format are accepted.
JPEG_OVERSIZE = 16
# Estimated peak bytes per decoded pixel, measured (see bench/images.py and tests/test_image_fuzz.py):
# the decoded image plus the copies made while shrinking it. libheif holds its own planes beside
# Pillow's copy, PNG palette images are expanded to RGBA, a progressive JPEG keeps every DCT coefficient.
BYTES_PER_PIXEL = {"JPEG": 4, "HEIF": 10}
OTHER_BYTES_PER_PIXEL = 8  # PNG RGBA: 4 for the decode, 4 for Pillow's premultiplied copy in reduce()
PROGRESSIVE_COEFFICIENT_BYTES = 6  # per stored pixel, 4:4:4 worst case (libjpeg's whole-image buffers)
# A 12 MP JPEG decoded at 1/2 gives 2000 px for a 2048 px max_edge: within this share of max_edge the
# reduced decode is kept as it is (resampling 2000 -> 2048 would only blur, and cost a full decode).
DRAFT_SLACK = 0.95

_TRANSPOSE = {2: Image.Transpose.FLIP_LEFT_RIGHT, 3: Image.Transpose.ROTATE_180,
              4: Image.Transpose.FLIP_TOP_BOTTOM, 5: Image.Transpose.TRANSPOSE,
              6: Image.Transpose.ROTATE_270, 7: Image.Transpose.TRANSVERSE, 8: Image.Transpose.ROTATE_90}
_SRGB = ImageCms.ImageCmsProfile(ImageCms.createProfile("sRGB"))

# Width / height a destination accepts (contracts doc §4.6, §5.3); a destination not named takes any.
ASPECT_LIMITS = {"instagram": (4 / 5, 1.91), "threads": (1 / 10, 10.0)}
FITS = ("pad", "crop")
MAX_FITTED_BYTES = 8 * 1024 * 1024  # Instagram and Threads take 8 MB
PAD_BLUR_EDGE = 48  # the padding is the photo shrunk to this, blurred and stretched: cheap, and no seam


@dataclass
class PreparedImage:
    path: Path
    width: int
    height: int
    bytes: int
    capture_time: datetime | None
    source_format: str
    fitted: dict[str, Path] = field(default_factory=dict)  # destination -> its fitted JPEG (written ones)


class DecodeBudget:
    """A semaphore counted in bytes: a decode reserves its estimated peak before it starts.

    Small decodes (a camera JPEG decoded at reduced size needs ~12 MB) run side by side; a large one
    waits until enough is free, and one larger than the whole budget runs alone. So the memory that
    decoding takes in a process stays near ``limit`` whatever the number of workers."""

    def __init__(self, limit_bytes: int):
        self.limit = max(1, int(limit_bytes))
        self.used = 0
        self.peak_reserved = 0
        self._cond = threading.Condition()

    @contextmanager
    def reserve(self, nbytes: int) -> Iterator[None]:
        need = min(max(0, int(nbytes)), self.limit)
        with self._cond:
            while self.used + need > self.limit:
                self._cond.wait()
            self.used += need
            self.peak_reserved = max(self.peak_reserved, self.used)
        try:
            yield
        finally:
            with self._cond:
                self.used -= need
                self._cond.notify_all()


_budgets: dict[int, DecodeBudget] = {}
_budgets_lock = threading.Lock()


def decode_budget(limit_bytes: int) -> DecodeBudget:
    """The process-wide budget for this limit (one per configured size, shared by every worker)."""
    with _budgets_lock:
        if limit_bytes not in _budgets:
            _budgets[limit_bytes] = DecodeBudget(limit_bytes)
        return _budgets[limit_bytes]


def estimate_bytes(img: Image.Image) -> int:
    """Peak bytes decoding ``img`` (opened, maybe drafted, not loaded) will take."""
    w, h = img.size
    per_px = BYTES_PER_PIXEL.get(img.format or "", OTHER_BYTES_PER_PIXEL)
    total = w * h * per_px
    if _progressive(img):  # never drafted: img.size is the stored size
        total += w * h * PROGRESSIVE_COEFFICIENT_BYTES
    return total


def _progressive(img: Image.Image) -> bool:
    return img.format == "JPEG" and bool(img.info.get("progressive") or img.info.get("progression"))


def _capture_time(img: Image.Image) -> datetime | None:
    try:
        exif = img.getexif()
    except Exception:  # noqa: BLE001 - broken EXIF must not fail the post
        return None
    raw = None
    try:
        raw = exif.get_ifd(EXIF_IFD).get(EXIF_DATETIME_ORIGINAL)
    except Exception:  # noqa: BLE001
        raw = None
    raw = raw or exif.get(EXIF_DATETIME)
    if not isinstance(raw, str):
        return None
    try:
        # EXIF times carry no zone; they are local wall-clock times. Kept as such, labelled UTC.
        return datetime.strptime(raw.strip("\x00 ").strip(), "%Y:%m:%d %H:%M:%S").replace(tzinfo=UTC)
    except ValueError:
        return None


def _orientation(img: Image.Image) -> int:
    try:
        value = img.getexif().get(EXIF_ORIENTATION, 1)
    except Exception:  # noqa: BLE001 - broken EXIF: no rotation
        return 1
    return value if isinstance(value, int) else 1


def _draft(img: Image.Image, max_edge: int) -> None:
    """Ask libjpeg for the smallest DCT-scaled decode whose long edge still reaches ~max_edge."""
    w, h = img.size
    for scale in (8, 4, 2):
        if max(w, h) // scale >= DRAFT_SLACK * max_edge and min(w, h) // scale >= 1:
            img.draft(None, (w // scale, h // scale))
            return


def format_of(path: Path) -> str | None:
    """The file's image format as Pillow names it ("JPEG", "HEIF"...), read from its header only; None when
    it is not an image Pillow knows (:func:`prepare` then says what is wrong)."""
    try:
        with Image.open(path) as img:
            return img.format
    except Exception:  # noqa: BLE001 - any parser failure means "not identified"; prepare reports it
        return None


@contextmanager
def open_untrusted(path: Path, max_pixels: int, reduce_to: int | None = None) -> Iterator[Image.Image]:
    """Open an image from an untrusted source under the decompression-bomb guard. Any failure to decode,
    in the ``with`` body too, becomes a permanent :class:`ImageError` with a reason a user can read.

    ``reduce_to``: the long edge the caller will shrink to; a JPEG is then set to decode at reduced scale
    and ``max_pixels`` applies to what is decoded (its stored size may be up to JPEG_OVERSIZE times more,
    unless it is progressive: libjpeg then buffers the whole image's coefficients)."""
    # Pillow's own guard is process-wide, so it is set to the largest size any caller accepts; the exact
    # limit for this call is checked below, once the format is known.
    Image.MAX_IMAGE_PIXELS = max_pixels * JPEG_OVERSIZE
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("error", Image.DecompressionBombWarning)
            with Image.open(path) as img:
                w, h = img.size
                limit = max_pixels
                if reduce_to and img.format == "JPEG" and not _progressive(img):
                    _draft(img, reduce_to)
                    limit = max_pixels * JPEG_OVERSIZE
                if w * h > limit or img.size[0] * img.size[1] > max_pixels:
                    raise ImageError(f"the image is {w}x{h} pixels, over the {max_pixels:,} pixel limit "
                                     "(images.max_pixels)", code="too_many_pixels")
                yield img
    except ImageError:
        raise
    except (Image.DecompressionBombError, Image.DecompressionBombWarning):
        raise ImageError(f"the image is too large to decode safely (over {max_pixels:,} pixels; "
                         "images.max_pixels)", code="too_many_pixels") from None
    except UnidentifiedImageError:
        raise ImageError("not an image, or an image format that is not supported (JPEG, PNG, HEIC, "
                         "WebP, GIF, TIFF are)", code="not_image") from None
    except (OSError, SyntaxError, ValueError, EOFError, struct_error) as exc:
        # Pillow's parsers report malformed input with any of these; all mean "this file is broken".
        raise ImageError(f"the image is corrupt or truncated: {exc}", code="corrupt") from None
    except MemoryError:
        raise ImageError("the image needs too much memory to decode", code="too_many_pixels") from None
    except Exception as exc:  # noqa: BLE001 - a parser fed hostile bytes fails in many ways (found by fuzzing:
        # TypeError from Pillow's PNG decoder setup); every one means this file cannot be posted.
        log.info("image.decoder_error", exc_info=True)
        raise ImageError(f"the image could not be decoded ({type(exc).__name__}: {exc})", code="corrupt") from None


def _shrink(img: Image.Image, max_edge: int) -> Image.Image:
    """Decode ``img`` and return an RGB image no larger than ``max_edge``, making full-size copies only
    where a mode has no other way (a palette or 1-bit image is expanded before it can be resampled)."""
    img.load()
    im: Image.Image = img
    if im.mode not in ("L", "LA", "RGB", "RGBA", "CMYK"):
        im = im.convert("RGBA" if im.has_transparency_data else "RGB")
    k = max(im.size) // (2 * max_edge)
    if k >= 2:  # cheap box reduction to ~2x the target, then a proper filter for the last step
        im = im.reduce(k)
    if im.mode in ("LA", "RGBA"):
        bg = Image.new("RGB", im.size, (255, 255, 255))
        bg.paste(im.convert("RGB"), mask=im.getchannel("A"))
        im = bg
    if max(im.size) > max_edge:
        scale = max_edge / max(im.size)
        size = (max(1, round(im.size[0] * scale)), max(1, round(im.size[1] * scale)))
        im = im.resize(size, Image.Resampling.LANCZOS)
    return im  # may be ``img`` itself (a 12 MP JPEG decoded at 1/2 is already the right size)


def _to_srgb(im: Image.Image, icc: bytes | None) -> Image.Image:
    """RGB pixels in sRGB. With a source profile the colours are converted (LittleCMS), so the output
    needs no profile; an unreadable profile is ignored (the pixels are taken as sRGB, as browsers do)."""
    if icc:
        try:
            src = ImageCms.ImageCmsProfile(io.BytesIO(icc))
            if "srgb" not in (ImageCms.getProfileDescription(src) or "").lower().replace(" ", ""):
                return ImageCms.profileToProfile(im, src, _SRGB, outputMode="RGB")
        except (ImageCms.PyCMSError, OSError, ValueError, TypeError):
            pass
    return im if im.mode == "RGB" else im.convert("RGB")


def prepare(src: Path, dest: Path, *, max_pixels: int, max_edge: int, quality: int = 85,
            max_bytes: int | None = None, budget: DecodeBudget | None = None,
            fitted: dict[str, Path] | None = None, fit: str = "pad") -> PreparedImage:
    """Validate ``src`` and write the cleaned JPEG to ``dest`` (atomically). Raises ImageError.

    ``fitted``: destination -> path; for each destination whose aspect range (ASPECT_LIMITS) the image is
    outside, a JPEG brought into it (``fit``) is written there too, from the same decoded pixels."""
    try:
        size = src.stat().st_size
    except OSError as exc:
        raise ImageError(f"cannot read the downloaded file: {exc.strerror}", code="unreadable") from None
    if size == 0:
        raise ImageError("the file is empty (0 bytes)", code="empty")
    if max_bytes is not None and size > max_bytes:
        raise ImageError(f"the file is {_mb(size)}, over the {_mb(max_bytes)} limit (images.max_file_bytes)",
                         code="too_large")
    budget = budget or decode_budget(max_pixels * max(BYTES_PER_PIXEL.values()))
    with open_untrusted(src, max_pixels, reduce_to=max_edge) as img:
        fmt = img.format or "unknown"
        captured = _capture_time(img)
        orientation = _orientation(img)
        icc = img.info.get("icc_profile")
        with budget.reserve(estimate_bytes(img)):
            small = _shrink(img, max_edge)
            if orientation in _TRANSPOSE:
                small = small.transpose(_TRANSPOSE[orientation])
            out = _to_srgb(small, icc)
            # Metadata reaches a JPEG only two ways: keyword arguments of save() (none given here) and the
            # image's ``info`` (Pillow writes info["comment"] as a COM segment). ``out`` may still be the
            # decoded source image itself, so its info goes. tests/test_images.py checks every segment.
            out.info = {}
            data = _encode(out, quality)
            written = {}
            for platform, path in (fitted or {}).items():
                im = fit_aspect(out, platform, fit)
                if im is not None:
                    write_atomic(path, _encode(im, quality, MAX_FITTED_BYTES))
                    written[platform] = path
    write_atomic(dest, data)
    return PreparedImage(dest, out.size[0], out.size[1], len(data), captured, fmt, written)


def _encode(im: Image.Image, quality: int, max_bytes: int | None = None) -> bytes:
    # No optimize=True: it doubles the encode time for ~5 % fewer bytes; the platforms re-encode.
    while True:
        buf = io.BytesIO()
        im.save(buf, format="JPEG", quality=quality)
        if max_bytes is None or buf.tell() <= max_bytes or quality <= 50:
            return buf.getvalue()
        quality -= 10


def needs_fit(platform: str, width: int | None, height: int | None) -> bool:
    """The destination does not take an image of this size as it is."""
    limits = ASPECT_LIMITS.get(platform)
    if limits is None or not width or not height:
        return False
    return not limits[0] <= width / height <= limits[1]


def fit_aspect(im: Image.Image, platform: str, fit: str) -> Image.Image | None:
    """``im`` (RGB) brought into ``platform``'s aspect range, or None when it is already in it.

    ``pad`` keeps the whole photo, centred on a canvas of the nearest allowed ratio filled with a blurred,
    stretched copy of the photo (no hard bars, colours of the photo itself); ``crop`` cuts the longer side
    down about the centre. Sizes round towards the inside of the range, so the result always passes."""
    if not needs_fit(platform, *im.size):
        return None
    lo, hi = ASPECT_LIMITS[platform]
    w, h = im.size
    too_wide = w / h > hi
    if fit == "crop":
        if too_wide:
            cw = max(1, math.floor(h * hi))
            box = ((w - cw) // 2, 0, (w - cw) // 2 + cw, h)
        else:
            ch = max(1, math.floor(w / lo))
            box = (0, (h - ch) // 2, w, (h - ch) // 2 + ch)
        return im.crop(box)
    size = (w, math.ceil(w / hi)) if too_wide else (math.ceil(h * lo), h)
    small = im.copy()
    small.thumbnail((PAD_BLUR_EDGE, PAD_BLUR_EDGE), Image.Resampling.BOX)
    canvas = small.filter(ImageFilter.GaussianBlur(2)).resize(size, Image.Resampling.BILINEAR)
    canvas.paste(im, ((size[0] - w) // 2, (size[1] - h) // 2))
    return canvas


def fit_file(src: Path, dest: Path, platform: str, fit: str, *, max_pixels: int, quality: int = 85) -> bool:
    """Write ``src`` (a prepared JPEG) fitted for ``platform`` to ``dest``; False if it already fits. For
    a post prepared without its fitted copy (made before it was needed): decodes the small prepared JPEG,
    never the original."""
    with open_untrusted(src, max_pixels) as img:
        im = fit_aspect(img.convert("RGB"), platform, fit)
        if im is None:
            return False
        write_atomic(dest, _encode(im, quality, MAX_FITTED_BYTES))
    return True


def write_atomic(dest: Path, data: bytes) -> None:
    dest.parent.mkdir(parents=True, exist_ok=True)
    tmp = dest.with_name(f".{dest.name}.{os.getpid()}.tmp")
    with open(tmp, "wb") as fh:
        fh.write(data)
        fh.flush()
        os.fsync(fh.fileno())
    os.replace(tmp, dest)


def _mb(n: int) -> str:
    return f"{n / (1024 * 1024):.1f} MB"
