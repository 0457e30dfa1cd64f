"""Fixtures for the captioner tests: realistic photos (noise, EXIF with GPS) and configs built from
the real config schema."""

from __future__ import annotations

from pathlib import Path

import pytest
from PIL import Image

from aiposter.config import Config
from aiposter.images import prepare

from .fakes import API_KEY

GPS_IFD = 0x8825
ORIENTATION = 0x0112


def noisy_photo(path: Path, size: tuple[int, int], *, orientation: int = 1, fmt: str = "JPEG") -> Path:
    """A photo-like image (noise compresses like real detail) carrying EXIF with a GPS position."""
    w, h = size
    bands = [Image.effect_noise(size, 60).point(lambda v, k=k: (v + k * 40) % 256) for k in range(3)]
    img = Image.merge("RGB", bands)
    img.paste((250, 20, 20), (0, 0, w // 4, h // 4))  # a red top-left corner, to check orientation
    exif = Image.Exif()
    exif[ORIENTATION] = orientation
    exif[0x010F] = "TestCam"
    gps = exif.get_ifd(GPS_IFD)
    gps.update({1: "N", 2: (52.0, 22.0, 12.5), 3: "E", 4: (4.0, 53.0, 40.0)})
    img.save(path, format=fmt, exif=exif, quality=92)
    return path


def prepared(original: Path) -> Path:
    """What the pipeline hands a captioner: the output of aiposter.images.prepare."""
    dest = original.with_name(f"prepared-{original.name}")
    prepare(original, dest, max_pixels=100_000_000, max_edge=4096)
    return dest


@pytest.fixture(scope="session")
def camera_photo(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A 6 MP camera photo, prepared: for what the image sent looks like."""
    return prepared(noisy_photo(tmp_path_factory.mktemp("photos") / "camera.jpg", (3000, 2000)))


@pytest.fixture(scope="session")
def photo(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A small prepared photo, for tests about everything but the image (quick to downscale)."""
    return prepared(noisy_photo(tmp_path_factory.mktemp("photos") / "small.jpg", (1200, 800)))


def make_config(provider: str, base_url: str, **overrides: object) -> Config:
    section = {"model": "m-test", "api_key": API_KEY, "base_url": base_url, "timeout": 5.0, "max_retries": 0}
    section.update(overrides)
    return Config.model_validate({"captioner": {"default": provider, provider: section}})
