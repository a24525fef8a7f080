"""Domain randomisation of pixels: backgrounds and photometric augmentation (numpy + OpenCV).

Every function takes a `numpy.random.Generator`, so a seed fixes the result. Images are
`(H, W, 3)` uint8 RGB.
"""

from __future__ import annotations

from pathlib import Path

import cv2
import numpy as np

IMAGE_SUFFIXES = {".jpg", ".jpeg", ".png", ".bmp", ".webp", ".tif", ".tiff"}
# Name endings of a game or CAD texture's companion maps (normals, specular, height...):
# data for a shader, not pictures of anything.
TEXTURE_MAP_ENDINGS = ("_nm", "_n", "_normal", "_sm", "_s", "_spec", "_specular", "_gm",
                       "_gloss", "_h", "_height", "_bump", "_disp", "_glow", "_alpha", "_ao")


def is_picture_file(path: Path) -> bool:
    """An image file by its suffix, and not a texture's companion map by its name."""
    return (path.suffix.lower() in IMAGE_SUFFIXES
            and not path.stem.lower().endswith(TEXTURE_MAP_ENDINGS))


def procedural_background(rng: np.random.Generator, height: int, width: int) -> np.ndarray:
    """A random texture: multi-scale coloured noise, a gradient, and random shapes."""
    # The smooth layers are built at a quarter of the size: they have no fine detail.
    h, w = max(8, height // 4), max(8, width // 4)
    img = np.zeros((h, w, 3), np.float32)
    for cells in rng.choice([2, 4, 8, 16, 32, 64], size=rng.integers(2, 5), replace=False):
        grid = rng.random((max(2, cells * h // w), cells, 3)).astype(np.float32)
        img += cv2.resize(grid, (w, h), interpolation=cv2.INTER_CUBIC) * rng.random()
    img /= max(float(img.max()), 1e-6)
    tint = rng.uniform(0.2, 1.0, 3).astype(np.float32)
    img = img * tint + rng.uniform(0.0, 0.4, 3).astype(np.float32)
    if rng.random() < 0.5:  # a light gradient, as on a lit table or wall
        axis = np.linspace(-1, 1, w if rng.random() < 0.5 else h, dtype=np.float32)
        ramp = axis[None, :, None] if len(axis) == w else axis[:, None, None]
        img += rng.uniform(-0.3, 0.3) * ramp
    img = np.clip(img * 255, 0, 255).astype(np.uint8)
    img = cv2.resize(img, (width, height), interpolation=cv2.INTER_LINEAR)
    for _ in range(rng.integers(0, 12)):
        _draw_shape(rng, img)
    return img


def _draw_shape(rng: np.random.Generator, img: np.ndarray) -> None:
    h, w = img.shape[:2]
    gray = rng.uniform(0, 255)
    color = tuple(int(gray + (c - gray) * rng.uniform(0, 0.8)) for c in rng.uniform(0, 255, 3))
    kind = rng.integers(0, 4)
    if kind == 0:
        center = (int(rng.integers(0, w)), int(rng.integers(0, h)))
        cv2.circle(img, center, int(rng.integers(2, max(3, h // 6))), color, -1, cv2.LINE_AA)
    elif kind == 1:
        c = rng.integers(0, [w, h])
        pts = (c + rng.integers(-w // 6, w // 6 + 1, size=(int(rng.integers(3, 7)), 2))
               ).astype(np.int32)
        cv2.fillPoly(img, [pts], color, cv2.LINE_AA)
    elif kind == 2:
        p0 = (int(rng.integers(0, w)), int(rng.integers(0, h)))
        p1 = (int(rng.integers(0, w)), int(rng.integers(0, h)))
        cv2.line(img, p0, p1, color, int(rng.integers(1, 12)), cv2.LINE_AA)
    else:
        x0, y0 = int(rng.integers(0, w)), int(rng.integers(0, h))
        x1 = x0 + int(rng.integers(max(2, w // 40), max(3, w // 4)))
        y1 = y0 + int(rng.integers(max(2, h // 40), max(3, h // 4)))
        cv2.rectangle(img, (x0, y0), (x1, y1), color, -1)


class PhotoBackgrounds:
    """Random crops of the photographs in a folder (searched recursively; a texture's
    companion maps, named like `wall_nm.png`, are left out)."""

    def __init__(self, folder: str | Path) -> None:
        folder = Path(folder)
        if not folder.is_dir():
            raise FileNotFoundError(f"backgrounds: {folder} is not a folder")
        self.paths = sorted(p for p in folder.rglob("*") if is_picture_file(p))
        if not self.paths:
            raise FileNotFoundError(f"backgrounds: no images ({', '.join(sorted(IMAGE_SUFFIXES))})"
                                    f" in {folder}")

    def sample(self, rng: np.random.Generator, height: int, width: int) -> np.ndarray | None:
        """A crop resized to (height, width); None when the drawn file is unreadable."""
        path = self.paths[int(rng.integers(len(self.paths)))]
        img = cv2.imread(str(path), cv2.IMREAD_COLOR)
        if img is None:
            return None
        img = img[..., ::-1]
        h, w = img.shape[:2]
        scale = rng.uniform(0.4, 1.0)
        ch, cw = max(8, int(h * scale)), max(8, int(min(w, h * width / height) * scale))
        cw = min(cw, w)
        y0, x0 = int(rng.integers(0, h - ch + 1)), int(rng.integers(0, w - cw + 1))
        crop = img[y0:y0 + ch, x0:x0 + cw]
        if rng.random() < 0.5:
            crop = crop[:, ::-1]
        return cv2.resize(np.ascontiguousarray(crop), (width, height),
                          interpolation=cv2.INTER_AREA)


def collect_backgrounds(sources: list[str | Path], out: str | Path, *, min_side: int = 200,
                        min_std: float = 12.0) -> tuple[int, int]:
    """Link into `out` the pictures under `sources` (folders, searched recursively) that
    are fit for backgrounds: readable, both sides >= `min_side` pixels, a standard deviation
    of the 8-bit levels (all channels) >= `min_std`, not a texture's companion map. Link
    names keep the last three path parts, so pictures of one name from several packages stay
    apart. Returns (linked, skipped)."""
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    linked = skipped = 0
    for source in map(Path, sources):
        if not source.is_dir():
            raise FileNotFoundError(f"backgrounds: {source} is not a folder")
        for path in sorted(source.rglob("*")):
            if path.suffix.lower() not in IMAGE_SUFFIXES:
                continue
            img = cv2.imread(str(path), cv2.IMREAD_COLOR) if is_picture_file(path) else None
            if img is None or min(img.shape[:2]) < min_side or float(img.std()) < min_std:
                skipped += 1
                continue
            link = out / "_".join(path.relative_to(source).parts[-3:])
            if not link.exists():
                link.symlink_to(path.resolve())
                linked += 1
    return linked, skipped


def composite(fg: np.ndarray, mask: np.ndarray, bg: np.ndarray) -> np.ndarray:
    """`fg` where `mask (H, W)` is set, `bg` elsewhere."""
    return np.where(mask[..., None], fg, bg)


def jitter_colors(rng: np.random.Generator, img: np.ndarray, *, brightness: float = 0.2,
                  contrast: float = 0.2, saturation: float = 0.2, hue_deg: float = 5.0
                  ) -> np.ndarray:
    """Random brightness, contrast, saturation and hue shifts."""
    b = rng.uniform(1 - brightness, 1 + brightness)
    c = rng.uniform(1 - contrast, 1 + contrast)
    mean = float(img.mean())
    # Brightness and contrast are one affine map of the levels: a lookup table.
    lut = np.clip(((np.arange(256) - mean) * c + mean) * b, 0, 255)
    x = cv2.LUT(img, lut.astype(np.uint8))
    s = rng.uniform(1 - saturation, 1 + saturation)
    gray = cv2.cvtColor(cv2.cvtColor(x, cv2.COLOR_RGB2GRAY), cv2.COLOR_GRAY2RGB)
    x = cv2.addWeighted(x, s, gray, 1 - s, 0)
    if hue_deg > 0:
        hsv = cv2.cvtColor(x, cv2.COLOR_RGB2HSV)
        # OpenCV's 8-bit hue runs over 0..179 for 0..358 degrees.
        shift = round(rng.uniform(-hue_deg, hue_deg) / 2)
        hue_lut = ((np.arange(256) + shift) % 180).astype(np.uint8)
        hsv[..., 0] = cv2.LUT(hsv[..., 0], hue_lut)
        x = cv2.cvtColor(hsv, cv2.COLOR_HSV2RGB)
    return x


def blur(rng: np.random.Generator, img: np.ndarray, *, max_sigma: float = 1.2,
         motion_prob: float = 0.2) -> np.ndarray:
    """Gaussian blur of random width, or sometimes a short linear motion blur."""
    if rng.random() < motion_prob:
        n = int(rng.integers(3, 8))
        kernel = np.zeros((n, n), np.float32)
        kernel[n // 2] = 1.0 / n
        rot = cv2.getRotationMatrix2D(((n - 1) / 2, (n - 1) / 2), rng.uniform(0, 180), 1.0)
        kernel = cv2.warpAffine(kernel, rot, (n, n))
        return cv2.filter2D(img, -1, kernel / max(float(kernel.sum()), 1e-6))
    sigma = rng.uniform(0.0, max_sigma)
    return cv2.GaussianBlur(img, (0, 0), sigma) if sigma > 0.2 else img


def add_noise(rng: np.random.Generator, img: np.ndarray, *, max_std: float = 6.0) -> np.ndarray:
    """Additive Gaussian sensor noise of random strength (in 8-bit levels)."""
    std = rng.uniform(0.0, max_std)
    if std < 0.5:
        return img
    # OpenCV's generator is several times faster than numpy's; seeding it from `rng` keeps
    # the result fixed by the seed.
    cv2.setRNGSeed(int(rng.integers(2**31)))
    noise = np.empty(img.shape, np.float32)
    cv2.randn(noise, 0.0, float(std))
    return cv2.add(img, noise, dtype=cv2.CV_8U)


def jpeg(rng: np.random.Generator, img: np.ndarray, quality: tuple[int, int] = (50, 95)
         ) -> np.ndarray:
    """JPEG compression artefacts at a random quality."""
    q = int(rng.integers(quality[0], quality[1] + 1))
    ok, buf = cv2.imencode(".jpg", img[..., ::-1], [cv2.IMWRITE_JPEG_QUALITY, q])
    return cv2.imdecode(buf, cv2.IMREAD_COLOR)[..., ::-1] if ok else img
