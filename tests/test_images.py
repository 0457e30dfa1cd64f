"""Image preparation (issue 8 findings 9 and 15, issue 13): bounded decoding, output sized for every
destination, and nothing but pixels in what is published."""

from __future__ import annotations

import io
import struct
import threading

import pytest
from PIL import Image, ImageCms

from aiposter import images
from aiposter.config import Config
from aiposter.core.errors import ImageError

# --------------------------------------------------------------------------- 15: every metadata segment


def _segment(marker: int, payload: bytes) -> bytes:
    return struct.pack(">BBH", 0xFF, marker, len(payload) + 2) + payload


def _xyz(x: float, y: float, z: float) -> bytes:
    return b"XYZ \0\0\0\0" + b"".join(struct.pack(">i", round(v * 65536)) for v in (x, y, z))


def swapped_primaries_profile() -> bytes:
    """A minimal ICC v2 RGB profile whose red and green primaries are sRGB's green and red: pixels tagged
    with it must change colour when converted to sRGB, so a test can tell the conversion happened."""
    desc_text = b"swapped primaries\0"
    tags = {
        b"desc": b"desc\0\0\0\0" + struct.pack(">I", len(desc_text)) + desc_text + b"\0" * 12 + b"\0" * 67,
        b"wtpt": _xyz(0.9642, 1.0, 0.8249),
        b"rXYZ": _xyz(0.3851, 0.7169, 0.0971),  # sRGB's green
        b"gXYZ": _xyz(0.4361, 0.2225, 0.0139),  # sRGB's red
        b"bXYZ": _xyz(0.1431, 0.0606, 0.7141),
        b"rTRC": b"curv\0\0\0\0\0\0\0\0", b"gTRC": b"curv\0\0\0\0\0\0\0\0", b"bTRC": b"curv\0\0\0\0\0\0\0\0",
    }
    offset = 128 + 4 + 12 * len(tags)
    table, data = b"", b""
    for sig, body in tags.items():
        body += b"\0" * (-len(body) % 4)
        table += sig + struct.pack(">II", offset + len(data), len(body))
        data += body
    size = offset + len(data)
    header = (struct.pack(">I", size) + b"\0\0\0\0" + bytes([2, 0x10, 0, 0]) + b"mntrRGB XYZ " + b"\0" * 12
              + b"acsp" + b"\0" * 24 + b"\0\0\0\0" + _xyz(0.9642, 1.0, 0.8249)[8:] + b"\0" * 48)
    return header + struct.pack(">I", len(tags)) + table + data


def markers(jpeg: bytes) -> list[int]:
    """The JPEG's segment markers up to the scan."""
    out, i = [], 2
    assert jpeg[:2] == b"\xff\xd8"
    while i < len(jpeg):
        assert jpeg[i] == 0xFF
        m = jpeg[i + 1]
        out.append(m)
        if m == 0xDA:
            return out
        i += 2 + struct.unpack(">H", jpeg[i + 2:i + 4])[0]
    return out


def photo_with_every_segment(tmp_path, icc: bytes):
    img = Image.new("RGB", (64, 48), (250, 0, 0))
    exif = Image.Exif()
    exif[0x010F] = "TestCam"
    exif.get_ifd(0x8825).update({1: "N", 2: (52.0, 22.0, 12.5)})
    buf = io.BytesIO()
    img.save(buf, "JPEG", exif=exif, icc_profile=icc, comment=b"secret comment",
             xmp=b"<x:xmpmeta xmlns:x='adobe:ns:meta/'>secret xmp</x:xmpmeta>", quality=95)
    raw = buf.getvalue()
    iptc = _segment(0xED, b"Photoshop 3.0\0" + b"8BIM\x04\x04\0\0\0\0\0\x0c\x1c\x02\x78\0\x08secretip")
    path = tmp_path / "full.jpg"
    path.write_bytes(raw[:2] + iptc + raw[2:])
    seen = set(markers(path.read_bytes()))
    assert {0xE1, 0xE2, 0xED, 0xFE} <= seen  # EXIF+XMP (APP1), ICC (APP2), IPTC (APP13), COM: all there
    return path


ALLOWED = {0xE0, 0xDB, 0xC0, 0xC4, 0xDD, 0xDA}  # JFIF, quantisation, frame, Huffman, restart interval, scan


def test_every_metadata_segment_is_stripped_and_colours_converted_to_srgb(tmp_path):
    src = photo_with_every_segment(tmp_path, swapped_primaries_profile())
    dest = tmp_path / "out.jpg"
    images.prepare(src, dest, max_pixels=10**6, max_edge=2048)
    data = dest.read_bytes()
    assert set(markers(data)) <= ALLOWED, [hex(m) for m in markers(data)]
    for secret in (b"secret", b"TestCam", b"Photoshop", b"http://ns.adobe.com", b"ICC_PROFILE", b"Exif"):
        assert secret not in data
    with Image.open(dest) as out:
        assert "icc_profile" not in out.info and "comment" not in out.info and not out.getexif()
        r, g, b = out.convert("RGB").getpixel((32, 24))
    # Red in the swapped profile is sRGB's green: the pixels were converted, not just untagged.
    assert g > 200 and r < 60, (r, g, b)


def test_an_srgb_profile_is_dropped_without_changing_colours(tmp_path):
    srgb = ImageCms.ImageCmsProfile(ImageCms.createProfile("sRGB")).tobytes()
    src = photo_with_every_segment(tmp_path, srgb)
    dest = tmp_path / "out.jpg"
    images.prepare(src, dest, max_pixels=10**6, max_edge=2048)
    assert set(markers(dest.read_bytes())) <= ALLOWED
    with Image.open(dest) as out:
        r, g, b = out.getpixel((32, 24))
    assert r > 230 and g < 30 and b < 30


def test_a_broken_profile_is_dropped_and_the_photo_still_posted(tmp_path):
    src = photo_with_every_segment(tmp_path, b"\0" * 200)
    dest = tmp_path / "out.jpg"
    images.prepare(src, dest, max_pixels=10**6, max_edge=2048)
    assert set(markers(dest.read_bytes())) <= ALLOWED


@pytest.mark.parametrize("fmt", ["PNG", "HEIF", "WEBP"])
def test_other_formats_lose_their_metadata_too(tmp_path, fmt):
    import pillow_heif

    pillow_heif.register_heif_opener()
    exif = Image.Exif()
    exif[0x010F] = "TestCam"
    path = tmp_path / f"x.{fmt.lower()}"
    Image.new("RGB", (64, 48), (0, 0, 250)).save(path, fmt, exif=exif.tobytes())
    dest = tmp_path / "out.jpg"
    images.prepare(path, dest, max_pixels=10**6, max_edge=2048)
    data = dest.read_bytes()
    assert set(markers(data)) <= ALLOWED and b"TestCam" not in data


# --------------------------------------------------------------------------- 9: bounded decoding


def jpeg(tmp_path, size, progressive=False, name="p.jpg"):
    path = tmp_path / name
    Image.new("RGB", size, (90, 120, 200)).save(path, "JPEG", quality=80, progressive=progressive)
    return path


def test_defaults_fit_every_destination_and_every_camera():
    im = Config().images
    # Facebook takes 2048 px, Instagram and Threads 1440: nothing larger is prepared.
    assert im.max_edge == 2048
    # Phones (48-50 MP), 61 MP bodies in any format; far under the old 100 MP that let a PNG take 2.3 GB.
    assert 61_000_000 <= im.max_pixels <= 64_000_000


def test_a_jpeg_over_max_pixels_is_decoded_at_reduced_size(tmp_path):
    """200 MP phone modes and medium format write JPEGs above max_pixels; libjpeg decodes them scaled."""
    src = jpeg(tmp_path, (3000, 2000))  # 6 MP against a 1 MP limit: decoded at 1/4 = 750x500
    prepared = images.prepare(src, tmp_path / "out.jpg", max_pixels=1_000_000, max_edge=700)
    assert (prepared.width, prepared.height) == (700, 467)


@pytest.mark.parametrize("fmt", ["PNG", "progressive JPEG"])
def test_formats_without_reduced_decoding_are_held_to_max_pixels(tmp_path, fmt):
    if fmt == "PNG":
        src = tmp_path / "p.png"
        Image.new("RGB", (3000, 2000)).save(src, "PNG")
    else:
        src = jpeg(tmp_path, (3000, 2000), progressive=True)
    with pytest.raises(ImageError) as err:
        images.prepare(src, tmp_path / "out.jpg", max_pixels=1_000_000, max_edge=700)
    assert err.value.code == "too_many_pixels" and "images.max_pixels" in str(err.value)


def test_a_12_mp_photo_is_prepared_at_the_largest_destination_size(tmp_path):
    src = jpeg(tmp_path, (4000, 3000))
    p = images.prepare(src, tmp_path / "out.jpg", max_pixels=Config().images.max_pixels,
                       max_edge=Config().images.max_edge)
    # Decoded at 1/2 (2000 px, within 5 % of 2048): no full decode, no resampling that would only blur.
    assert (p.width, p.height) == (2000, 1500)


def test_large_decodes_take_turns_within_the_memory_budget(tmp_path):
    """Two workers preparing large images at once: the second waits until the first is done."""
    budget = images.DecodeBudget(limit_bytes=40 * 1024 * 1024)  # room for one of them at a time
    srcs = []
    for i in range(3):
        p = tmp_path / f"big{i}.png"
        Image.new("RGB", (2000, 2000), (i, i, i)).save(p, "PNG")  # 4 MP x 8 B = 32 MB each
        srcs.append(p)
    errors: list = []

    def run(p):
        try:
            images.prepare(p, p.with_suffix(".out.jpg"), max_pixels=4_000_000, max_edge=500, budget=budget)
        except Exception as exc:  # noqa: BLE001
            errors.append(exc)

    threads = [threading.Thread(target=run, args=(p,)) for p in srcs]
    for t in threads:
        t.start()
    for t in threads:
        t.join(60)
    assert not errors
    assert 0 < budget.peak_reserved <= budget.limit and budget.used == 0
    one = 2000 * 2000 * images.OTHER_BYTES_PER_PIXEL
    assert budget.peak_reserved == one  # never two at once


# --------------------------------------------------------------------------- fit: per-destination aspect


def _bands(size) -> Image.Image:
    """Red left third, green middle, blue right third: where each part ends up shows what was kept."""
    w, h = size
    im = Image.new("RGB", size, (0, 200, 0))
    im.paste((220, 0, 0), (0, 0, w // 3, h))
    im.paste((0, 0, 220), (w - w // 3, 0, w, h))
    return im


@pytest.mark.parametrize(("size", "platform", "fit", "want"), [
    ((1800, 600), "instagram", "pad", (1800, 943)),
    ((1800, 600), "instagram", "crop", (1146, 600)),
    ((450, 800), "instagram", "pad", (640, 800)),
    ((450, 800), "instagram", "crop", (450, 562)),
    ((1500, 100), "threads", "pad", (1500, 150)),
    ((100, 1500), "threads", "crop", (100, 1000)),
])
def test_fit_brings_the_image_just_inside_the_destinations_range(size, platform, fit, want):
    out = images.fit_aspect(_bands(size), platform, fit)
    assert out.size == want and out.mode == "RGB"
    lo, hi = images.ASPECT_LIMITS[platform]
    assert lo <= want[0] / want[1] <= hi


def test_pad_keeps_the_whole_photo_centred_and_crop_keeps_its_centre():
    src = _bands((1800, 600))
    padded = images.fit_aspect(src, "instagram", "pad")
    top = (padded.height - 600) // 2
    assert padded.crop((0, top, 1800, top + 600)).tobytes() == src.tobytes()  # every pixel of the photo
    assert padded.getpixel((900, 2)) != (255, 255, 255)  # blurred photo, not white bars
    cropped = images.fit_aspect(src, "instagram", "crop")
    left = (1800 - cropped.width) // 2  # as much cut off each side
    assert cropped.tobytes() == src.crop((left, 0, left + cropped.width, 600)).tobytes()


@pytest.mark.parametrize("platform", ["instagram", "threads", "facebook"])
def test_an_image_in_range_or_for_a_destination_without_limits_is_left_alone(platform):
    assert images.fit_aspect(_bands((1000, 1000)), platform, "pad") is None
    assert images.fit_aspect(_bands((3000, 100)), "facebook", "crop") is None


def test_prepare_writes_the_fitted_copies_from_the_same_decode(tmp_path):
    src = tmp_path / "pano.png"
    _bands((1800, 600)).save(src)
    fitted = {"instagram": tmp_path / "ig.jpg", "threads": tmp_path / "th.jpg"}
    prepared = images.prepare(src, tmp_path / "out.jpg", max_pixels=50_000_000, max_edge=2048,
                              fitted=fitted, fit="crop")
    assert (prepared.width, prepared.height) == (1800, 600)
    assert prepared.fitted == {"instagram": fitted["instagram"]}  # 3:1 is within Threads' 10:1
    assert not fitted["threads"].exists()
    with Image.open(fitted["instagram"]) as im:
        assert im.format == "JPEG" and im.size == (1146, 600) and "icc_profile" not in im.info
    # and made again later from the prepared JPEG (a copy gone missing), the same way
    assert images.fit_file(prepared.path, tmp_path / "again.jpg", "instagram", "crop", max_pixels=50_000_000)
    with Image.open(tmp_path / "again.jpg") as im:
        assert im.size == (1146, 600)
    assert not images.fit_file(prepared.path, tmp_path / "no.jpg", "threads", "crop", max_pixels=50_000_000)
