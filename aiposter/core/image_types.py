"""Which image types a watch posts (``watch.image_types``), by MIME type.

A watch stores its choice as canonical MIME types, comma-separated (``"image/jpeg,image/png"``), or NULL
for its source's default: Google Drive posts :data:`DEFAULT` (JPEG, PNG, WebP, HEIC/HEIF); a local folder
posts every format the image decoder reads. Users may name a type by its MIME type or a friendly name
(``jpeg``/``jpg``, ``png``, ``webp``, ``heic``/``heif`` (both mean both), ``gif``, ``tiff``/``tif``).

Where it applies: the Drive feed routes an image only to the watches that take its MIME type (an image of
another type in the folder is recorded as skipped, with the reason, and never posted); for any source, a
downloaded file whose decoded format is not among an explicit choice is skipped with the reason.
"""

from __future__ import annotations

from collections.abc import Iterable

DEFAULT = ("image/jpeg", "image/png", "image/webp", "image/heic", "image/heif")
# Everything the pipeline can decode and prepare (aiposter.images), in display order.
SUPPORTED = (*DEFAULT, "image/gif", "image/tiff")
_NAMES = {"jpeg": ("image/jpeg",), "jpg": ("image/jpeg",), "png": ("image/png",), "webp": ("image/webp",),
          "heic": ("image/heic", "image/heif"), "heif": ("image/heic", "image/heif"), "gif": ("image/gif",),
          "tiff": ("image/tiff",), "tif": ("image/tiff",), "image/jpg": ("image/jpeg",)}
# Pillow's format names (Image.format) as MIME types; MPO is the multi-picture JPEG phones write.
_FORMATS = {"JPEG": ("image/jpeg",), "MPO": ("image/jpeg",), "PNG": ("image/png",), "WEBP": ("image/webp",),
            "HEIF": ("image/heic", "image/heif"), "GIF": ("image/gif",), "TIFF": ("image/tiff",)}
HELP = "jpeg, png, webp, heic, gif, tiff (or their MIME types)"


def parse(values: Iterable[str]) -> tuple[str, ...]:
    """The canonical MIME types for what a user wrote (items may hold several, comma-separated).
    ``()`` means "the source's default". ValueError with a readable reason for an unknown or non-image type."""
    chosen: set[str] = set()
    for value in values:
        for word in value.replace(",", " ").split():
            key = word.strip().lower()
            if key in SUPPORTED:
                chosen.add(key)
            elif key in _NAMES:
                chosen.update(_NAMES[key])
            elif "/" in key and not key.startswith("image/"):
                raise ValueError(f"{word!r} is not an image type; a watch posts images only ({HELP})")
            else:
                raise ValueError(f"unknown image type {word!r}; use {HELP}")
    return tuple(t for t in SUPPORTED if t in chosen)


def to_column(types: tuple[str, ...]) -> str | None:
    return ",".join(types) or None


def from_column(text: str | None, default: tuple[str, ...] = DEFAULT) -> tuple[str, ...]:
    return tuple(text.split(",")) if text else default


def describe(types: Iterable[str]) -> str:
    """``image/jpeg, image/heic`` as ``jpeg, heic``: what a user reads (and :func:`parse` accepts back)."""
    return ", ".join(t.split("/", 1)[-1] for t in types)


def not_taken(mime: str, column: str | None, default: tuple[str, ...] = DEFAULT) -> str:
    """Why a file of type ``mime`` is not posted by a watch whose ``image_types`` column is ``column``."""
    return f"{mime} is not one of this watch's image types ({describe(from_column(column, default))})"


def of_format(pillow_format: str | None) -> tuple[str, ...]:
    """The MIME types a decoded Pillow format stands for (``()`` if it is none of the supported ones)."""
    return _FORMATS.get((pillow_format or "").upper(), ())
