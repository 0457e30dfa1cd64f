"""Image-preparation cost against its ceiling, and bytes sent to an LLM, per 12 MP JPEG and per 12 MP HEIC.

    .venv/bin/python bench/images.py [--runs 5] [--max-edge 1568]

For each case a fresh subprocess prepares the photo ``--runs`` times (``aiposter.images.prepare`` with the
default config, then the captioner's ``imaging.downscale``) and reports the median time of each step and
its own peak RSS (and the RSS after imports, the interpreter's share), so one case's memory cannot hide
another's. Beside it, in the same run, another fresh subprocess measures the **ceiling**: bare Pillow doing
the least work that gives the same output (JPEG: ``draft`` at 1/2, resize to ``images.max_edge`` if still
larger, encode at the same quality; HEIC: decode, resize, encode), and each figure is printed with the
ratio to its ceiling (goal, issue 13: JPEG <= 1.3x the time, <= 150 MB peak).
"Bytes sent" is the base64 payload in the provider request: the prepared JPEG as it would go without the
LLM downscale ("before"), and the downscaled copy ("after").

The photos are synthetic but photo-like: smooth low-frequency structure plus fine sensor-like grain, which
compresses like a real camera JPEG (pure noise would be several times larger than any real photo).
"""

from __future__ import annotations

import argparse
import base64
import json
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

CASES = {"jpeg": ("camera.jpg", (4000, 3000), "JPEG"), "heic": ("phone.heic", (4032, 3024), "HEIF")}


def make_photo(path: Path, size: tuple[int, int], fmt: str) -> None:
    from PIL import Image, ImageChops

    if fmt == "HEIF":
        import pillow_heif

        pillow_heif.register_heif_opener()
    w, h = size
    structure = Image.merge("RGB", [Image.effect_noise((w // 40, h // 40), 90) for _ in range(3)])
    structure = structure.resize(size, Image.Resampling.BICUBIC)
    grain = Image.merge("RGB", [Image.effect_noise(size, 6) for _ in range(3)])
    photo = ImageChops.add(structure, grain, scale=1.0, offset=-128)
    exif = Image.Exif()
    exif[0x0112] = 6  # rotated, as phones store portrait shots
    exif.get_ifd(0x8825).update({1: "N", 2: (52.0, 22.0, 12.5), 3: "E", 4: (4.0, 53.0, 40.0)})
    photo.save(path, format=fmt, exif=exif, quality=92)


def peak_rss_mb() -> float:
    """This process's high-water RSS (VmHWM). Not getrusage: on Linux its ru_maxrss survives exec, so a
    child would report the memory of the parent it was forked from."""
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1]) / 1024
    raise RuntimeError("no VmHWM in /proc/self/status (Linux only)")


def measure(src: Path, runs: int, max_edge: int) -> dict:
    """Runs in the child: time prepare and downscale, report sizes and peak RSS."""
    from aiposter.captioners.imaging import downscale
    from aiposter.config import Config
    from aiposter.images import prepare

    im = Config().images
    baseline_mb = peak_rss_mb()
    prepare_ms, downscale_ms = [], []
    with tempfile.TemporaryDirectory() as tmp:
        dest = Path(tmp) / "prepared.jpg"
        for _ in range(runs):
            t0 = time.perf_counter()
            prepared = prepare(src, dest, max_pixels=im.max_pixels, max_edge=im.max_edge, quality=im.jpeg_quality)
            t1 = time.perf_counter()
            image = downscale(dest, max_edge=max_edge, max_pixels=im.max_pixels)
            t2 = time.perf_counter()
            prepare_ms.append((t1 - t0) * 1000)
            downscale_ms.append((t2 - t1) * 1000)
        before = len(base64.b64encode(dest.read_bytes()))
    return {
        "source_bytes": src.stat().st_size,
        "prepared": f"{prepared.width}x{prepared.height}",
        "sent": f"{image.width}x{image.height}",
        "prepare_ms": statistics.median(prepare_ms),
        "downscale_ms": statistics.median(downscale_ms),
        "baseline_mb": baseline_mb,
        "peak_mb": peak_rss_mb(),
        "b64_before": before,
        "b64_after": len(image.b64()),
    }


def ceiling(src: Path, runs: int) -> dict:
    """Runs in the child: the least Pillow can do for the same output (no orientation, no colour work)."""
    import io

    from PIL import Image

    import aiposter.images  # noqa: F401 - registers the HEIF opener with the same decode threads
    from aiposter.config import Config

    im = Config().images
    baseline_mb = peak_rss_mb()
    times = []
    for _ in range(runs):
        t0 = time.perf_counter()
        with Image.open(src) as img:
            if img.format == "JPEG":
                img.draft("RGB", (img.size[0] // 2, img.size[1] // 2))
            img.thumbnail((im.max_edge, im.max_edge), Image.Resampling.LANCZOS, reducing_gap=None)
            img.save(io.BytesIO(), "JPEG", quality=im.jpeg_quality)
        times.append((time.perf_counter() - t0) * 1000)
    return {"prepare_ms": statistics.median(times), "peak_mb": peak_rss_mb(), "baseline_mb": baseline_mb}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=5)
    parser.add_argument("--max-edge", type=int, default=1568, help="the providers' max_image_edge")
    parser.add_argument("--child", nargs=1, metavar="FILE", help=argparse.SUPPRESS)
    parser.add_argument("--ceiling", nargs=1, metavar="FILE", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        print(json.dumps(measure(Path(args.child[0]), args.runs, args.max_edge)))
        return
    if args.ceiling:
        print(json.dumps(ceiling(Path(args.ceiling[0]), args.runs)))
        return

    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        for case, (name, size, fmt) in CASES.items():
            path = Path(tmp) / name
            make_photo(path, size, fmt)
            out = {}
            for kind in ("--ceiling", "--child"):  # side by side: same photo, same moment, same machine
                command = [sys.executable, __file__, kind, str(path), "--runs", str(args.runs),
                           "--max-edge", str(args.max_edge)]
                out[kind] = json.loads(subprocess.run(command, check=True, capture_output=True, text=True).stdout)
            rows.append((case, out["--child"], out["--ceiling"]))

    header = (f"{'case':<5} {'source':>9} {'prepared':>9} {'prepare':>9} {'ceiling':>9} {'ratio':>6} "
              f"{'peak RSS':>9} {'ceiling':>8} {'ratio':>6} {'(imports)':>9} {'downscale':>9} {'sent':>9} "
              f"{'b64 before':>11} {'b64 after':>10}")
    print(f"median of {args.runs} runs; max_image_edge={args.max_edge}; goal: JPEG prepare <= 1.3x ceiling, "
          "<= 150 MB peak")
    print(header)
    print("-" * len(header))
    for case, r, c in rows:
        print(f"{case:<5} {r['source_bytes'] / 1e6:>7.2f}MB {r['prepared']:>9} "
              f"{r['prepare_ms']:>7.0f}ms {c['prepare_ms']:>7.0f}ms {r['prepare_ms'] / c['prepare_ms']:>5.2f}x "
              f"{r['peak_mb']:>7.0f}MB {c['peak_mb']:>6.0f}MB {r['peak_mb'] / c['peak_mb']:>5.2f}x "
              f"{r['baseline_mb']:>7.0f}MB {r['downscale_ms']:>7.0f}ms {r['sent']:>9} "
              f"{r['b64_before'] / 1e6:>9.2f}MB {r['b64_after'] / 1e6:>8.2f}MB")


if __name__ == "__main__":
    main()
