"""PNG encoding: EntGAN's own encoder against `torchvision.io.encode_png` and PIL.

`entgan generate` writes its PNGs with `entgan.gan.sampling.pngs` (no row filter, zlib level from
`png_level`: stored for 32x32, level 1 above). This compares it, on the same smooth uint8 images
and one thread, with torchvision's libpng encoder at several levels and with PIL's `Image.save`;
every encoder's output is checked to read back pixel-exact with PIL first.

    python -m benchmarks.png_encoders      # ~1 min on an idle core

Prints microseconds per image (median of 5) and the mean file size per encoder. The numbers
behind the choice are in docs/benchmarks.md ("PNG encoder").
"""

from __future__ import annotations

import io
import statistics
import time
import warnings

import numpy as np
import torch
from PIL import Image
from torchvision.io import encode_png

from entgan.gan.sampling import png_level, pngs


def _median_seconds(fn, repeats: int = 5) -> float:
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        fn()
        times.append(time.perf_counter() - start)
    return statistics.median(times)


def _images(size: int, count: int) -> torch.Tensor:
    """Smooth uint8 images (N, 3, S, S): bilinear upsampling of noise, closer to a GAN's output."""
    small = torch.rand(count, 3, max(1, size // 4), max(1, size // 4), generator=torch.Generator().manual_seed(0))
    big = torch.nn.functional.interpolate(small, size=(size, size), mode="bilinear")
    return big.mul(255).round().to(torch.uint8)


def _pil(tile: np.ndarray, level: int) -> bytes:
    out = io.BytesIO()
    Image.fromarray(tile).save(out, "PNG", compress_level=level)
    return out.getvalue()


def compare(size: int, count: int) -> dict[str, tuple[float, float]]:
    """{encoder: (µs per image, mean bytes per image)} for `count` images of `size`²."""
    # torchvision 0.29 deprecates its image encoders (in favour of TorchCodec) and warns per call
    warnings.filterwarnings("ignore", message="The image decoding and encoding", category=DeprecationWarning)
    chw = _images(size, count)
    hwc = chw.permute(0, 2, 3, 1).contiguous().numpy()
    level = png_level(size, size)
    encoders = {
        f"entgan pngs (level {level})": lambda: list(pngs(hwc)),
        **{f"torchvision encode_png level {c}": (lambda c=c: [encode_png(t, compression_level=c).numpy().tobytes()
                                                               for t in chw]) for c in sorted({level, 1, 6})},
        f"PIL Image.save (level {level})": lambda: [_pil(t, level) for t in hwc],
    }
    results = {}
    for name, encode in encoders.items():
        files = encode()  # also the warm-up
        if not np.array_equal(np.asarray(Image.open(io.BytesIO(files[0])).convert("RGB")), hwc[0]):
            raise AssertionError(f"{name}: the PNG does not read back to its pixels")
        seconds = _median_seconds(encode)
        results[name] = (seconds / count * 1e6, float(np.mean([len(f) for f in files])))
    return results


def main() -> None:
    torch.set_num_threads(1)
    for size, count in ((32, 4096), (64, 1024), (128, 256)):
        print(f"{size}x{size}, {count} images")
        for name, (micros, size_bytes) in compare(size, count).items():
            print(f"  {name:36s} {micros:8.1f} µs/img  {size_bytes / 1024:6.1f} KiB")


if __name__ == "__main__":
    main()
