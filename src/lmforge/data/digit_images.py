"""A learnable image set generated offline: scikit-learn's bundled 8x8 digits drawn at several sizes,
positions and colours into small RGB PNGs, one folder per class. Written once into the cache
(deterministic: the same files on every machine), so image presets run with no download."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from lmforge.atomic import publish_dir

#: The label sets the generated images can carry: each digit, or whether it is even or odd.
TASKS = ("digits", "parity")
VERSION = "v1"


def generated_digits(cache_dir: str | Path, task: str = "digits", size: int = 32, copies: int = 2) -> Path:
    """The folder (`<class>/<n>.png`) of the generated set for `task`, written on first use.

    Each of the 1,797 digits is drawn `copies` times on a `size` x `size` canvas: scaled to between
    half and nine tenths of the canvas, at a random place, in a random colour on a random background
    colour at least 0.4 away in brightness. A digit's images all land in the same class folder."""
    folder = Path(cache_dir) / "image_digits" / f"{VERSION}-{task}-{size}px-{copies}x"
    if folder.is_dir():  # published whole or not at all
        return folder
    from PIL import Image
    from sklearn.datasets import load_digits

    images, labels = load_digits(return_X_y=True)
    rng = np.random.default_rng(0)
    with publish_dir(folder) as tmp:
        for i, (pixels, label) in enumerate(zip(images, labels)):
            name = str(int(label)) if task == "digits" else ("even" if label % 2 == 0 else "odd")
            (tmp / name).mkdir(exist_ok=True)
            ink = (pixels.reshape(8, 8) / 16.0).astype(np.float32)
            for copy in range(copies):
                side = int(rng.integers(size // 2, size * 9 // 10 + 1))
                glyph = np.asarray(Image.fromarray((ink * 255).astype(np.uint8)).resize((side, side),
                                                                                        Image.BILINEAR))
                alpha = glyph.astype(np.float32)[..., None] / 255.0
                background, foreground = contrasting_colours(rng)
                canvas = np.broadcast_to(background, (size, size, 3)).astype(np.float32).copy()
                top, left = (int(rng.integers(0, size - side + 1)) for _ in range(2))
                patch = canvas[top:top + side, left:left + side]
                canvas[top:top + side, left:left + side] = patch * (1 - alpha) + foreground * alpha
                Image.fromarray(canvas.round().astype(np.uint8)).save(tmp / name / f"{i:04d}-{copy}.png")
    return folder


def contrasting_colours(rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray]:
    """A background and a foreground RGB colour (0-255) whose mean brightness differs by at least 0.4."""
    while True:
        background, foreground = rng.uniform(0, 255, 3), rng.uniform(0, 255, 3)
        if abs(background.mean() - foreground.mean()) >= 0.4 * 255:
            return background, foreground
