"""The image copy sent to providers, and the parsing of their answers."""

from __future__ import annotations

import io
import json

import pillow_heif
import pytest
from PIL import Image

from aiposter.captioners.imaging import downscale
from aiposter.captioners.llm import MalformedOutput, build_prompt, parse_answer
from aiposter.core.errors import CaptionError, ImageError
from aiposter.core.ports import CaptionRequest

from .conftest import GPS_IFD, noisy_photo

pillow_heif.register_heif_opener()
PLATFORMS = ("instagram", "threads")


# --------------------------------------------------------------------------- imaging


def test_downscale_strips_metadata_even_from_an_unprepared_photo(tmp_path):
    original = noisy_photo(tmp_path / "raw.jpg", (2400, 1600))
    with Image.open(original) as img:
        assert img.getexif().get_ifd(GPS_IFD)  # the input does carry a position
    image = downscale(original, max_edge=800, max_pixels=10**8)
    assert (image.width, image.height) == (800, 533)
    with Image.open(io.BytesIO(image.data)) as img:
        assert img.format == "JPEG" and img.size == (800, 533)
        assert not img.getexif() and "icc_profile" not in img.info
    assert b"Exif" not in image.data and b"TestCam" not in image.data


def test_downscale_applies_exif_orientation(tmp_path):
    # Stored landscape with the red corner top-left; orientation 6 means "rotate 90° clockwise to view".
    original = noisy_photo(tmp_path / "rotated.jpg", (400, 200), orientation=6)
    image = downscale(original, max_edge=1000, max_pixels=10**8)
    assert (image.width, image.height) == (200, 400)
    with Image.open(io.BytesIO(image.data)) as img:
        red, green, blue = img.convert("RGB").getpixel((190, 10))   # now top-right
    assert red > 200 and green < 80 and blue < 80


def test_downscale_never_upscales(tmp_path):
    image = downscale(noisy_photo(tmp_path / "small.jpg", (300, 200)), max_edge=1568, max_pixels=10**8)
    assert (image.width, image.height) == (300, 200)


def test_downscale_reads_heic(tmp_path):
    original = noisy_photo(tmp_path / "phone.heic", (600, 450), fmt="HEIF")
    image = downscale(original, max_edge=400, max_pixels=10**8)
    assert (image.width, image.height) == (400, 300)
    assert image.data[:3] == b"\xff\xd8\xff" and b"Exif" not in image.data


def test_downscale_guards_against_decompression_bombs(tmp_path):
    original = noisy_photo(tmp_path / "big.jpg", (400, 300))
    with pytest.raises(ImageError) as info:
        downscale(original, max_edge=1568, max_pixels=100_000)
    assert info.value.code == "too_many_pixels"


def test_downscale_rejects_what_is_not_an_image(tmp_path):
    path = tmp_path / "notes.jpg"
    path.write_text("hello")
    with pytest.raises(ImageError):
        downscale(path, max_edge=1568, max_pixels=10**8)


# --------------------------------------------------------------------------- the answer


ANSWER = {"captions": {"instagram": "A", "threads": "B"}, "hashtags": ["#x"], "alt_text": "alt"}


@pytest.mark.parametrize("text", [
    json.dumps(ANSWER),
    f"```json\n{json.dumps(ANSWER, indent=2)}\n```",
    f"Sure! Here it is:\n\n{json.dumps(ANSWER)}\n\nLet me know.",
])
def test_parse_answer_tolerates_fences_and_prose(text):
    answer = parse_answer(text, PLATFORMS)
    assert answer.captions == {"instagram": "A", "threads": "B"}
    assert (answer.hashtags, answer.alt_text) == (["#x"], "alt")


def test_parse_answer_takes_one_caption_for_every_platform():
    answer = parse_answer('{"caption": "Same everywhere", "hashtags": "#a #b"}', PLATFORMS)
    assert answer.captions == {"instagram": "Same everywhere", "threads": "Same everywhere"}
    assert answer.hashtags == ["#a", "#b"]


@pytest.mark.parametrize("text, problem", [
    ("", "empty"),
    ("I cannot do that.", "not JSON"),
    ('{"captions": {"instagram": "A"', "not valid JSON"),
    ("[1, 2]", "not JSON"),
    ('{"hashtags": []}', "captions"),
    ('{"captions": {"instagram": "A"}}', "threads"),
    ('{"captions": {"instagram": "A", "threads": 5}}', "captions"),
])
def test_parse_answer_rejects_unusable_answers(text, problem):
    with pytest.raises(MalformedOutput, match=problem):
        parse_answer(text, PLATFORMS)


def test_prompt_hints_each_platforms_limits_and_defaults_the_unknown(tmp_path):
    request = CaptionRequest(tmp_path / "x.jpg", "a.jpg", "f", ["instagram", "threads", "bluesky"])
    prompt = build_prompt(request, "Describe it.", [])
    assert "- threads: at most 450 characters, counting each emoji as 4" in prompt.system
    assert "- bluesky: at most 450 characters" in prompt.system
    assert prompt.platforms == ("instagram", "threads", "bluesky")


def test_a_broken_prompt_template_is_a_permanent_error(tmp_path):
    request = CaptionRequest(tmp_path / "x.jpg", "a.jpg", "f", ["threads"])
    with pytest.raises(CaptionError) as info:
        build_prompt(request, "{{ file_name.__class__.__mro__ }}", [])
    assert info.value.permanent
