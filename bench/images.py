"""Image-preparation cost and bytes sent to an LLM, per 12 MP JPEG and per 12 MP HEIC.

    .venv/bin/python bench/images.py [--runs 5] [--max-edge 1568]

For each case a fresh subprocess prepares the photo ``--runs`` times (``aiposter.images.prepare``, then
the captioner's ``imaging.downscale``) and reports the median time of each step and its own peak RSS
(and the RSS after imports, the interpreter's share), so one case's memory cannot hide another's.
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
    from aiposter.images import prepare

    baseline_mb = peak_rss_mb()
    prepare_ms, downscale_ms = [], []
    with tempfile.TemporaryDirectory() as tmp:
        dest = Path(tmp) / "prepared.jpg"
        for _ in range(runs):
            t0 = time.perf_counter()
            prepared = prepare(src, dest, max_pixels=100_000_000, max_edge=4096)
            t1 = time.perf_counter()
            image = downscale(dest, max_edge=max_edge, max_pixels=100_000_000)
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


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=5)
    parser.add_argument("--max-edge", type=int, default=1568, help="the providers' max_image_edge")
    parser.add_argument("--child", nargs=1, metavar="FILE", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        print(json.dumps(measure(Path(args.child[0]), args.runs, args.max_edge)))
        return

    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        for case, (name, size, fmt) in CASES.items():
            path = Path(tmp) / name
            make_photo(path, size, fmt)
            command = [sys.executable, __file__, "--child", str(path), "--runs", str(args.runs),
                       "--max-edge", str(args.max_edge)]
            out = subprocess.run(command, check=True, capture_output=True, text=True)
            rows.append((case, json.loads(out.stdout)))

    header = (f"{'case':<5} {'source':>9} {'prepared':>9} {'sent':>9} {'prepare':>9} {'downscale':>9} "
              f"{'peak RSS':>9} {'(imports)':>9} {'b64 before':>11} {'b64 after':>10} {'saved':>6}")
    print(f"median of {args.runs} runs; max_image_edge={args.max_edge}")
    print(header)
    print("-" * len(header))
    for case, r in rows:
        print(f"{case:<5} {r['source_bytes'] / 1e6:>7.2f}MB {r['prepared']:>9} {r['sent']:>9} "
              f"{r['prepare_ms']:>7.0f}ms {r['downscale_ms']:>7.0f}ms {r['peak_mb']:>7.0f}MB "
              f"{r['baseline_mb']:>7.0f}MB {r['b64_before'] / 1e6:>9.2f}MB {r['b64_after'] / 1e6:>8.2f}MB "
              f"{1 - r['b64_after'] / r['b64_before']:>6.0%}")


if __name__ == "__main__":
    main()
