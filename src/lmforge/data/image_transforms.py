"""What happens to an image between its file and the model: resized once to a square of `image_size`
(as the exported image processor does), then, for training only, a random resized crop and a
horizontal flip (and RandAugment, as an option) drawn from a generator seeded by (seed, epoch, index): a
sample's augmentation is the same in any worker and after a resume. Normalised by per-channel mean and
standard deviation."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Optional

import numpy as np
import torch
from PIL import Image

from lmforge.data.rand_augment import rand_augment

#: The processor exported beside the model: resize to a square, rescale to [0, 1], normalise.
PROCESSOR_CLASS = "ViTImageProcessorPil"


def square(image: Image.Image, size: int) -> np.ndarray:
    """`image` resized to `size` x `size` (bilinear, as the image processor resizes), uint8 [H, W, 3]."""
    return np.asarray(image.resize((size, size), Image.BILINEAR), dtype=np.uint8)


@dataclass(frozen=True)
class Augment:
    """Training augmentation: a crop of `crop_scale` of the area (aspect ratio 3/4 to 4/3) resized back
    to the full size, a horizontal flip with probability `hflip`, then `randaugment_ops` RandAugment
    operations at `randaugment_magnitude` (none when 0)."""

    crop_scale: tuple[float, float] = (0.35, 1.0)
    hflip: float = 0.5
    randaugment_ops: int = 0
    randaugment_magnitude: float = 9

    def __call__(self, pixels: np.ndarray, rng: np.random.Generator) -> np.ndarray:
        size = pixels.shape[0]
        if self.crop_scale[0] < 1.0:
            pixels = self.random_resized_crop(pixels, rng, size)
        if self.hflip > 0 and rng.random() < self.hflip:
            pixels = pixels[:, ::-1]
        if self.randaugment_ops > 0:
            pixels = rand_augment(pixels, self.randaugment_ops, self.randaugment_magnitude, rng)
        return pixels

    def random_resized_crop(self, pixels: np.ndarray, rng: np.random.Generator, size: int) -> np.ndarray:
        height, width = pixels.shape[:2]
        for _ in range(10):  # as torchvision's RandomResizedCrop: ten tries, then the whole image
            area = height * width * rng.uniform(*self.crop_scale)
            ratio = np.exp(rng.uniform(np.log(3 / 4), np.log(4 / 3)))
            w, h = int(round(np.sqrt(area * ratio))), int(round(np.sqrt(area / ratio)))
            if 0 < w <= width and 0 < h <= height:
                top, left = int(rng.integers(0, height - h + 1)), int(rng.integers(0, width - w + 1))
                crop = Image.fromarray(np.ascontiguousarray(pixels[top:top + h, left:left + w]))
                return square(crop, size)
        return pixels


def normalise(pixels: np.ndarray, mean: np.ndarray, std: np.ndarray) -> torch.Tensor:
    """uint8 [H, W, 3] -> float [3, H, W], rescaled to [0, 1] and normalised per channel."""
    x = (pixels.astype(np.float32) / 255.0 - mean) / std
    return torch.from_numpy(np.ascontiguousarray(x.transpose(2, 0, 1)))


def channel_stats(images: list[np.ndarray]) -> tuple[list[float], list[float]]:
    """Per-channel mean and standard deviation (of pixels rescaled to [0, 1]) over `images`."""
    pixels = np.concatenate([im.reshape(-1, 3) for im in images]).astype(np.float64) / 255.0
    return pixels.mean(0).round(6).tolist(), np.maximum(pixels.std(0), 1e-3).round(6).tolist()


def image_processor(size: int, mean: list[float], std: list[float]):
    """The Hugging Face image processor that does what evaluation does here (a stock class: the
    `image-classification` pipeline loads it from an exported directory)."""
    from transformers import ViTImageProcessorPil

    return ViTImageProcessorPil(do_resize=True, size={"height": size, "width": size}, resample=Image.BILINEAR,
                                do_rescale=True, rescale_factor=1 / 255, do_normalize=True,
                                image_mean=list(mean), image_std=list(std))


def processor_stats(processor: object) -> Optional[tuple[list[float], list[float]]]:
    """The normalisation (mean, std) of a Hugging Face image processor, None when it has none."""
    mean, std = getattr(processor, "image_mean", None), getattr(processor, "image_std", None)  # optional keys
    if mean is None or std is None:
        return None
    return [float(v) for v in mean], [float(v) for v in std]
