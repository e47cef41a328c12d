"""RandAugment (Cubuk et al., 2019) on Pillow images: each training image gets `ops` operations drawn
at random from a fixed list, all at one `magnitude` (0-30, torchvision's scale: 9 is its default and
the paper's ImageNet setting). Written here on Pillow because torchvision's and timm's need
torchvision, which does not import beside the CPU build of torch. The draws come from the caller's
generator, so an image's augmentation follows from (seed, epoch, index) and resume stays exact."""

from __future__ import annotations

from typing import Annotated, Callable

import numpy as np
from PIL import Image, ImageEnhance, ImageOps
from pydantic import Field

MAX_MAGNITUDE = 30
Magnitude = Annotated[float, Field(ge=0, le=MAX_MAGNITUDE)]
FILL = (128, 128, 128)  # what shifts, shears and rotations uncover


def _affine(image: Image.Image, matrix: tuple[float, ...]) -> Image.Image:
    return image.transform(image.size, Image.AFFINE, matrix, resample=Image.NEAREST, fillcolor=FILL)


# name -> (operation(image, signed strength in -1..1), whether the strength's sign is drawn)
OPERATIONS: dict[str, tuple[Callable[[Image.Image, float], Image.Image], bool]] = {
    "identity": (lambda im, s: im, False),
    "shear_x": (lambda im, s: _affine(im, (1, 0.3 * s, 0, 0, 1, 0)), True),
    "shear_y": (lambda im, s: _affine(im, (1, 0, 0, 0.3 * s, 1, 0)), True),
    "translate_x": (lambda im, s: _affine(im, (1, 0, 0.45 * s * im.width, 0, 1, 0)), True),
    "translate_y": (lambda im, s: _affine(im, (1, 0, 0, 0, 1, 0.45 * s * im.height)), True),
    "rotate": (lambda im, s: im.rotate(30 * s, resample=Image.NEAREST, fillcolor=FILL), True),
    "brightness": (lambda im, s: ImageEnhance.Brightness(im).enhance(1 + 0.9 * s), True),
    "color": (lambda im, s: ImageEnhance.Color(im).enhance(1 + 0.9 * s), True),
    "contrast": (lambda im, s: ImageEnhance.Contrast(im).enhance(1 + 0.9 * s), True),
    "sharpness": (lambda im, s: ImageEnhance.Sharpness(im).enhance(1 + 0.9 * s), True),
    "posterize": (lambda im, s: ImageOps.posterize(im, 8 - int(round(4 * s))), False),
    "solarize": (lambda im, s: ImageOps.solarize(im, int(round(255 * (1 - s)))), False),
    "autocontrast": (lambda im, s: ImageOps.autocontrast(im), False),
    "equalize": (lambda im, s: ImageOps.equalize(im), False),
}


NAMES = list(OPERATIONS)


def rand_augment(pixels: np.ndarray, ops: int, magnitude: float, rng: np.random.Generator) -> np.ndarray:
    """`pixels` (uint8 [H, W, 3]) after `ops` operations drawn with `rng`, each at `magnitude` / 30."""
    image = Image.fromarray(np.ascontiguousarray(pixels))
    strength = magnitude / MAX_MAGNITUDE
    for choice in rng.integers(0, len(NAMES), ops):
        operation, signed = OPERATIONS[NAMES[choice]]
        sign = -1.0 if signed and rng.random() < 0.5 else 1.0
        image = operation(image, sign * strength)
    return np.asarray(image, dtype=np.uint8)
