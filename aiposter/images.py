"""Image preparation: the only place that decodes untrusted image bytes.

Every image is decoded once, with Pillow's decompression-bomb guard set from config, EXIF orientation
applied, converted to an sRGB-ish RGB JPEG and re-encoded *without* metadata (no EXIF, no GPS, no XMP;
the ICC profile is kept so colours stay right). The capture date is read before the metadata goes.
HEIC/HEIF decode through pillow-heif.
"""

from __future__ import annotations

import io
import os
import warnings
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path

from PIL import Image, ImageOps, UnidentifiedImageError

from aiposter.core.errors import ImageError

try:  # HEIC/HEIF support is a dependency, but keep the module importable without it
    import pillow_heif

    pillow_heif.register_heif_opener()
    HEIF = True
except ImportError:  # pragma: no cover
    HEIF = False

EXIF_DATETIME_ORIGINAL = 0x9003
EXIF_DATETIME = 0x0132
EXIF_IFD = 0x8769


@dataclass
class PreparedImage:
    path: Path
    width: int
    height: int
    bytes: int
    capture_time: datetime | None
    source_format: str


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


@contextmanager
def open_untrusted(path: Path, max_pixels: int) -> Iterator[Image.Image]:
    """Open an image from an untrusted source under the decompression-bomb guard. Any failure to decode,
    in the ``with`` body too, becomes a permanent :class:`ImageError` with a reason a user can read."""
    Image.MAX_IMAGE_PIXELS = max_pixels
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("error", Image.DecompressionBombWarning)
            with Image.open(path) as img:
                w, h = img.size
                if w * h > max_pixels:
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
    except (OSError, SyntaxError, ValueError) as exc:
        raise ImageError(f"the image is corrupt or truncated: {exc}", code="corrupt") from None
    except MemoryError:
        raise ImageError("the image needs too much memory to decode", code="too_many_pixels") from None


def prepare(src: Path, dest: Path, *, max_pixels: int, max_edge: int, quality: int = 90,
            max_bytes: int | None = None) -> PreparedImage:
    """Validate ``src`` and write the cleaned JPEG to ``dest`` (atomically). Raises ImageError."""
    try:
        size = src.stat().st_size
    except OSError as exc:
        raise ImageError(f"cannot read the downloaded file: {exc.strerror}", code="unreadable") from None
    if size == 0:
        raise ImageError("the file is empty (0 bytes)", code="empty")
    if max_bytes is not None and size > max_bytes:
        raise ImageError(f"the file is {_mb(size)}, over the {_mb(max_bytes)} limit (images.max_file_bytes)",
                         code="too_large")
    with open_untrusted(src, max_pixels) as img:
        fmt = img.format or "unknown"
        captured = _capture_time(img)
        img.load()
        icc = img.info.get("icc_profile")
        out = ImageOps.exif_transpose(img)
        if out.mode not in ("RGB", "L"):
            if out.mode in ("RGBA", "LA", "P", "PA"):
                rgba = out.convert("RGBA")
                bg = Image.new("RGB", rgba.size, (255, 255, 255))
                bg.paste(rgba, mask=rgba.getchannel("A"))
                out = bg
            else:
                out = out.convert("RGB")
        if max(out.size) > max_edge:
            out.thumbnail((max_edge, max_edge), Image.Resampling.LANCZOS)
        buf = io.BytesIO()
        # No exif=..., no xmp: the re-encoded JPEG carries no location or camera metadata.
        save_kwargs = {"format": "JPEG", "quality": quality, "optimize": True}
        if icc:
            save_kwargs["icc_profile"] = icc
        out.convert("RGB").save(buf, **save_kwargs)
    data = buf.getvalue()
    write_atomic(dest, data)
    return PreparedImage(dest, out.size[0], out.size[1], len(data), captured, fmt)


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
