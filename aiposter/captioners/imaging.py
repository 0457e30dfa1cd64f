"""The copy of an image that is sent to an LLM: small, and carrying nothing but pixels.

``aiposter.images.prepare`` already produced a clean JPEG (oriented, metadata stripped, at most
``images.max_edge`` px). Providers do not see more detail above roughly 1.5 megapixels, yet bill tokens
and transfer time for every pixel, so the captioner sends a second, smaller copy. It is re-encoded from
pixels only (no EXIF, no XMP, no ICC profile, no comment), so even a file that skipped ``prepare`` could
not leak its GPS position, and it is decoded under the same decompression-bomb limit.
"""

from __future__ import annotations

import base64
import io
from dataclasses import dataclass
from pathlib import Path

from PIL import Image, ImageOps

from aiposter.images import open_untrusted

JPEG_QUALITY = 85  # the model reads shapes and colours, not compression artefacts; 85 halves the bytes of 95


@dataclass(frozen=True)
class LLMImage:
    data: bytes          # a baseline JPEG, no metadata
    width: int
    height: int
    mime_type: str = "image/jpeg"

    def b64(self) -> str:
        return base64.b64encode(self.data).decode("ascii")

    def data_url(self) -> str:
        return f"data:{self.mime_type};base64,{self.b64()}"


def downscale(path: Path, *, max_edge: int, max_pixels: int) -> LLMImage:
    """Read ``path`` and return a JPEG whose long edge is at most ``max_edge``, stripped of metadata.

    Raises ImageError (permanent) when the file cannot be decoded or is over ``max_pixels``.
    """
    with open_untrusted(path, max_pixels) as img:
        w, h = img.size
        # JPEG can decode straight at 1/2, 1/4 or 1/8 scale: far less memory and time than a full
        # decode followed by a resize. Asked for the final size, it never goes below it.
        scale = min(1.0, max_edge / max(w, h))
        img.draft("RGB", (round(w * scale), round(h * scale)))
        out = img.convert("RGB")
        # Resized before the EXIF rotation: the bound is square, and rotating the small image is cheaper.
        if max(out.size) > max_edge:
            out.thumbnail((max_edge, max_edge), Image.Resampling.LANCZOS)
        out = ImageOps.exif_transpose(out)
    buf = io.BytesIO()
    # A fresh image object from pixels: nothing from the source's info dict can ride along. No optimize=True:
    # it doubled the encode time for a 1-3 % smaller copy that only the LLM provider sees.
    Image.frombytes("RGB", out.size, out.tobytes()).save(buf, format="JPEG", quality=JPEG_QUALITY)
    return LLMImage(buf.getvalue(), out.size[0], out.size[1])
