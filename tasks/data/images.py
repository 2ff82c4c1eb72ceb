"""Image folders: ``data.source`` a folder of class subfolders of PNG/JPEG files (the layout
torchvision's ``ImageFolder`` reads), on disk or under an S3 prefix.

Classes are the subfolder names in sorted order, labelled 0, 1, ... (ImageFolder's convention);
the names are kept in ``Dataset.meta["class_names"]``. Every image is decoded with Pillow,
converted to grayscale or RGB, resized to ``data.image_size`` and scaled to [0, 1], giving
float32 samples of shape (C, H, W): the CNN's input, and image-like for the schema (one value
domain for every pixel, ``meta["value_range"] = [0, 1]``). The array is allocated once and
filled image by image, so memory holds the decoded data plus one file at a time.
"""

from __future__ import annotations

import io
from pathlib import PurePosixPath
from typing import Callable, Sequence

import numpy as np

from tasks.data.dataset import Dataset
from tasks.errors import DataError

IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg")
_GRAY_MODES = {"1", "L", "LA", "I", "I;16", "F", "P"}


def _class_of(uri: str, root: str) -> tuple[str, str] | None:
    """(class name, file name) of an image directly inside a class subfolder of ``root``."""
    rel = uri[len(root) :].lstrip("/") if uri.startswith(root) else None
    if rel is None:
        return None
    parts = PurePosixPath(rel.replace("\\", "/")).parts
    if len(parts) != 2 or PurePosixPath(parts[1]).suffix.lower() not in IMAGE_SUFFIXES:
        return None
    return parts[0], parts[1]


def _size(image_size: int | Sequence[int] | None) -> tuple[int, int] | None:
    if image_size is None:
        return None
    if isinstance(image_size, int):
        return image_size, image_size
    h, w = (int(v) for v in image_size)
    return h, w


def load_image_folder(
    root: str,
    uris: list[str],
    read_bytes: Callable[[str], bytes],
    image_size: int | Sequence[int] | None = None,
    mode: str = "auto",
) -> Dataset:
    """Decode the images under ``root`` (``uris``: every file below it, as :func:`list_uri` gives).

    ``image_size``: (H, W) or one int for square images; None keeps the images' own size, which
    must then be the same for all (the error names two files that differ). ``mode``: "grayscale",
    "rgb", or "auto" (grayscale when every image is, else RGB). Errors name the folder or file.
    """
    from PIL import Image, UnidentifiedImageError

    entries = sorted(((c, f, u) for u in uris if (cf := _class_of(u, root)) for c, f in [cf]))
    if not entries:
        raise DataError(
            f"{root}: no images in class subfolders (expected {root}/<class>/<image>{'|'.join(IMAGE_SUFFIXES)})"
        )
    classes = sorted({c for c, _, _ in entries})
    if len(classes) < 2:
        raise DataError(f"{root}: found one class subfolder ({classes[0]!r}); a classifier needs at least two")
    label_of = {c: i for i, c in enumerate(classes)}
    want = _size(image_size)

    def open_image(uri: str):
        try:
            im = Image.open(io.BytesIO(read_bytes(uri)))
            im.load()
            return im
        except (UnidentifiedImageError, OSError, SyntaxError, ValueError) as e:
            raise DataError(f"{uri}: cannot be read as an image: {type(e).__name__}: {e}") from e

    first = open_image(entries[0][2])
    if mode == "auto":
        # Deciding needs every image's mode; PIL reads headers lazily, so this decodes nothing.
        modes = {first.mode}
        for _, _, u in entries[1:]:
            try:
                modes.add(Image.open(io.BytesIO(read_bytes(u))).mode)
            except (UnidentifiedImageError, OSError) as e:
                raise DataError(f"{u}: cannot be read as an image: {type(e).__name__}: {e}") from e
        mode = "grayscale" if modes <= _GRAY_MODES else "rgb"
    if mode not in ("grayscale", "rgb"):
        raise DataError(f"data.image_mode: {mode!r}; use auto, grayscale or rgb")
    pil_mode, channels = ("L", 1) if mode == "grayscale" else ("RGB", 3)
    h, w = want if want is not None else (first.height, first.width)
    x = np.empty((len(entries), channels, h, w), dtype=np.float32)
    y = np.empty(len(entries), dtype=np.int64)
    for i, (cls, _, uri) in enumerate(entries):
        im = first if i == 0 else open_image(uri)
        if want is None and (im.height, im.width) != (h, w):
            raise DataError(
                f"{uri} is {im.width}x{im.height} but {entries[0][2]} is {w}x{h}; "
                f"set data.image_size=[H, W] to resize them all"
            )
        im = im.convert(pil_mode)
        if (im.height, im.width) != (h, w):
            im = im.resize((w, h), Image.Resampling.BILINEAR)
        a = np.asarray(im, dtype=np.float32) / 255.0
        x[i] = a[None] if channels == 1 else a.transpose(2, 0, 1)
        y[i] = label_of[cls]
    return Dataset(x=x, y=y, name=root, meta={"value_range": [0.0, 1.0], "class_names": classes, "image_mode": mode})
