"""Datasets derived offline from others: rotated and inverted images, and scikit-learn's digits.

A derived dataset is named ``<base>@<variant>``: ``fashion_mnist@rot30`` (every image rotated
30 degrees counter-clockwise), ``fashion_mnist@invert`` (255 - pixel). Labels and splits are the
base dataset's, and every image is derived from its own base image alone, so the images at
some indices of a derived split are the derived images of the base split at those indices.
``digits`` is scikit-learn's bundled 8x8 digits (no download), upsampled to 28x28.
"""

from __future__ import annotations

import re

import numpy as np

ROTATION = re.compile(r"rot(\d+)")
VARIANTS = ("invert", "rot<degrees>")  # for error messages

DIGITS_SIZE = 28
DIGITS_TEST_FRACTION = 5  # every fifth image of a class (rounded down) is in the test split
DIGITS_SPLIT_SEED = 0
_CHUNK = 8192  # images rotated at once: bounds the float32 temporaries to about 50 MB


def parse_variant(variant: str) -> int | None:
    """The rotation angle in degrees of ``variant``, or None for ``invert``; a ValueError names anything else."""
    if variant == "invert":
        return None
    match = ROTATION.fullmatch(variant)
    if match is None or not 0 < int(match.group(1)) < 360:
        raise ValueError(
            f"dataset variant {variant!r} is unknown; choose 'invert' or 'rot<degrees>' with degrees in 1..359 "
            "(rotation by 0 degrees is the base dataset itself)"
        )
    return int(match.group(1))


def invert(images: np.ndarray) -> np.ndarray:
    """Photographic negative of uint8 images: 255 - pixel."""
    return 255 - images


def _corners(size: int, degrees: float) -> list[tuple[np.ndarray, np.ndarray]]:
    """For each output pixel of a ``size`` x ``size`` image, its four bilinear source pixels and weights.

    The output pixel at offset (dx, dy) from the centre ((size - 1) / 2, rows counted downwards)
    reads the input at that offset turned clockwise by ``degrees``, so the image turns
    counter-clockwise as displayed. A source outside the image gets weight 0: black fill.
    """
    theta = np.deg2rad(degrees)
    centre = (size - 1) / 2
    rows, cols = np.mgrid[0:size, 0:size].astype(np.float64) - centre
    source_x = np.cos(theta) * cols - np.sin(theta) * rows + centre
    source_y = np.sin(theta) * cols + np.cos(theta) * rows + centre
    x0, y0 = np.floor(source_x), np.floor(source_y)
    fx, fy = source_x - x0, source_y - y0
    corners = []
    for dy, dx, weight in ((0, 0, (1 - fy) * (1 - fx)), (0, 1, (1 - fy) * fx), (1, 0, fy * (1 - fx)), (1, 1, fy * fx)):
        y, x = y0 + dy, x0 + dx
        inside = (y >= 0) & (y < size) & (x >= 0) & (x < size)
        index = np.where(inside, y * size + x, 0).astype(np.intp).ravel()
        corners.append((index, np.where(inside, weight, 0.0).astype(np.float32).ravel()))
    return corners


def _check_square(images: np.ndarray) -> None:
    if images.ndim not in (3, 4) or images.shape[1] != images.shape[2] or images.dtype != np.uint8:
        raise ValueError(f"rotated images must be uint8 (N, S, S) or (N, S, S, C), got {images.dtype} {images.shape}")


def rotate_bilinear(images: np.ndarray, degrees: float) -> np.ndarray:
    """uint8 square images (N, S, S) or (N, S, S, C) turned counter-clockwise by ``degrees`` about their
    centre: bilinear interpolation, same size, black fill, rounded to the nearest integer.

    Written out (four gathers of the pixels, weighted) rather than scipy.ndimage.rotate or
    Pillow, which take 2-3 s for Fashion-MNIST's 60,000 training images; this takes about 0.4 s.
    """
    _check_square(images)
    n, size = len(images), images.shape[1]
    corners = _corners(size, degrees)
    out = np.empty_like(images)
    for start in range(0, n, _CHUNK):
        chunk = images[start : start + _CHUNK]
        # pixels first, (S*S, images*channels): each gather then copies whole contiguous rows
        pixels = np.ascontiguousarray(np.moveaxis(chunk.reshape(len(chunk), size * size, -1), 1, 0))
        pixels = pixels.reshape(size * size, -1)
        total = np.zeros(pixels.shape, np.float32)
        gathered = np.empty_like(pixels)
        product = np.empty(pixels.shape, np.float32)
        for index, weight in corners:
            np.take(pixels, index, axis=0, out=gathered)
            np.multiply(gathered, weight[:, None], out=product)
            total += product
        np.rint(total, out=total)  # a convex combination of 0..255 (weights >= 0, sum <= 1): no clipping needed
        rotated = total.astype(np.uint8).reshape(size * size, len(chunk), -1)
        out[start : start + _CHUNK] = np.moveaxis(rotated, 0, 1).reshape(chunk.shape)
    return out


def quarter_turns(images: np.ndarray, turns: int) -> np.ndarray:
    """Images turned counter-clockwise by ``turns`` x 90 degrees: exact (np.rot90), contiguous."""
    _check_square(images)
    return np.ascontiguousarray(np.rot90(images, turns, axes=(1, 2)))


def rotate(images: np.ndarray, degrees: int) -> np.ndarray:
    """uint8 square images turned counter-clockwise by whole ``degrees``: the remainder modulo 90
    bilinearly (:func:`rotate_bilinear`), then whole quarter turns exactly (:func:`quarter_turns`).

    The same rotation as a bilinear one by ``degrees`` (a quarter turn maps the pixel grid onto
    itself), and a dataset rotated by 120 degrees is its 30-degree rotation turned once more.
    """
    turns, rest = divmod(degrees % 360, 90)
    return quarter_turns(rotate_bilinear(images, rest) if rest else images, turns)


def derive(images: np.ndarray, variant: str) -> np.ndarray:
    """``images`` of a base dataset as the derived dataset ``<base>@<variant>`` holds them: inverted, or
    rotated by :func:`rotate`. Every image is derived alone, so deriving a few gives what deriving the
    whole split gives at those indices."""
    degrees = parse_variant(variant)
    return invert(images) if degrees is None else rotate(images, degrees)


def _resize_matrix(size_in: int, size_out: int) -> np.ndarray:
    """(size_out, size_in) linear interpolation weights: half-pixel centres, edges clamped
    (as torch's ``interpolate(mode="bilinear", align_corners=False)``)."""
    source = np.clip((np.arange(size_out) + 0.5) * size_in / size_out - 0.5, 0, size_in - 1)
    low = np.floor(source).astype(int)
    high = np.minimum(low + 1, size_in - 1)
    matrix = np.zeros((size_out, size_in))
    np.add.at(matrix, (np.arange(size_out), low), 1 - (source - low))
    np.add.at(matrix, (np.arange(size_out), high), source - low)
    return matrix


def digits_split(labels: np.ndarray) -> dict[str, np.ndarray]:
    """scikit-learn digits has no official split: per class, its images shuffled by
    ``default_rng([DIGITS_SPLIT_SEED, class])`` and the first fifth (rounded down) taken as the test split.

    About 180 images per class: 140-147 train and 34-36 test images.
    """
    test = []
    for cls in np.unique(labels):
        members = np.random.default_rng([DIGITS_SPLIT_SEED, int(cls)]).permutation(np.flatnonzero(labels == cls))
        test.append(members[: len(members) // DIGITS_TEST_FRACTION])
    is_test = np.zeros(len(labels), dtype=bool)
    is_test[np.concatenate(test)] = True
    return {"train": np.flatnonzero(~is_test), "test": np.flatnonzero(is_test)}


def load_digits_split(split: str) -> tuple[np.ndarray, np.ndarray]:
    """(images uint8 (N, 28, 28), labels int64) of scikit-learn's digits for ``split`` (see :func:`digits_split`).

    The 8x8 images (values 0..16, bright strokes on black like MNIST) are scaled to 0..255 and
    upsampled bilinearly (:func:`_resize_matrix`) to 28x28, then rounded.
    """
    from sklearn.datasets import load_digits  # scikit-learn: imported when digits is first asked for

    digits = load_digits()
    labels = digits.target.astype(np.int64)
    chosen = digits_split(labels)[split]
    resize = _resize_matrix(digits.images.shape[1], DIGITS_SIZE)
    images = np.einsum("ij,njk,lk->nil", resize, digits.images[chosen] * (255 / 16), resize)
    return np.clip(np.rint(images), 0, 255).astype(np.uint8), labels[chosen]
