"""Image files decoded with Pillow (JPEG, PNG, GIF, WebP, ...) to RGB: the one place images are opened,
so every image data module names a bad file the same way."""

from __future__ import annotations

from pathlib import Path

from PIL import Image, UnidentifiedImageError

from lmforge.errors import UserError

#: File suffixes read as images when a folder is scanned (a manifest may name any file).
IMAGE_SUFFIXES = (".jpg", ".jpeg", ".png", ".gif", ".webp", ".bmp")


class BadImage(UserError):
    """A file that is not an image, is truncated or cannot be read: names the file."""


def open_rgb(path: str | Path) -> Image.Image:
    """The image at `path`, fully decoded and converted to RGB (the first frame of a GIF); a file Pillow
    cannot decode raises BadImage naming it (a data module counts and skips those on request)."""
    try:
        with Image.open(path) as image:
            image.load()  # decode now: a truncated file fails here, not in a DataLoader worker later
            return image.convert("RGB")
    except (OSError, UnidentifiedImageError, ValueError, Image.DecompressionBombError) as exc:
        reason = "not an image" if isinstance(exc, UnidentifiedImageError) else f"unreadable image ({exc})"
        raise BadImage(f"{path}: {reason}") from None
