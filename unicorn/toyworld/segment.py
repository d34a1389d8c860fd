"""Pixel analysis of a (possibly noisy) image: palette classes, connected components, shape features."""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from PIL import Image

from .scene import BACKGROUND_COLOURS, OBJECT_COLOURS, SIZE_FRACTION

PALETTE_NAMES = list(OBJECT_COLOURS) + list(BACKGROUND_COLOURS)
PALETTE = np.array([*OBJECT_COLOURS.values(), *BACKGROUND_COLOURS.values()], dtype=np.float32)  # [K, 3]
NUM_OBJECT_COLOURS = len(OBJECT_COLOURS)
UNKNOWN = -1
MAX_COLOUR_DISTANCE = 60.0  # RGB distance beyond which a pixel matches no palette colour
SQUARE_FILL = 0.96  # box fill ratio above which a symmetric blob is a square (a circle is pi/4 = 0.785)
CIRCLE_FILL = 0.705  # ... and above which it is a circle rather than a diamond (1/2)
SETTLED_DISTANCE = 25.0  # a pixel this close to a palette colour is that colour, not a blurred mixture
MAX_MIXING_WEIGHT = 1.3  # beyond the colour itself (noise, drift), not another colour further along the line
MAX_OBJECT_AREA = 0.4  # of the image; a bigger blob of one colour is background, not an object
BORDER_BAND = 0.08  # rows at the top / bottom that vote for the sky / ground colour
# Size boundaries halfway between the rendered extents.
SIZE_BOUNDS = ((SIZE_FRACTION["small"] + SIZE_FRACTION["medium"]) / 2, (SIZE_FRACTION["medium"] + SIZE_FRACTION["large"]) / 2)


@dataclass
class Blob:
    """One connected component of a single object colour."""
    colour: str
    area: int
    box: tuple[int, int, int, int]  # x0, y0, x1, y1 (exclusive)
    mask: np.ndarray  # bool [y1-y0, x1-x0], cropped to box
    cx: float  # centroid of the hole-filled blob, as fractions of the image side
    cy: float
    shape: str
    size: str
    style: str


@dataclass
class Analysis:
    image_size: int
    rgb: np.ndarray  # uint8 [H, W, 3]
    classes: np.ndarray  # int [H, W]: index into PALETTE_NAMES, or UNKNOWN
    blobs: list[Blob]
    sky: str | None  # most common colour in the top / bottom border bands
    ground: str | None
    unknown_fraction: float


def to_array(image) -> np.ndarray:
    """uint8 RGB [H, W, 3] from a PIL image or an array (float arrays in [0, 1] or [0, 255])."""
    if isinstance(image, Image.Image):
        return np.asarray(image.convert("RGB"))
    arr = np.asarray(image)
    if arr.dtype != np.uint8:
        arr = arr.astype(np.float64)
        arr = np.clip(arr * 255 if arr.max() <= 1.0 else arr, 0, 255).round().astype(np.uint8)
    assert arr.ndim == 3 and arr.shape[2] == 3, arr.shape
    return arr


def classify_pixels(rgb: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Nearest palette colour per pixel (UNKNOWN when none is within MAX_COLOUR_DISTANCE), and the
    distance to it. Both [H, W]."""
    dist = np.linalg.norm(rgb.astype(np.float32)[:, :, None, :] - PALETTE[None, None], axis=-1)  # [H, W, K]
    nearest, distance = dist.argmin(-1), dist.min(-1)
    return np.where(distance <= MAX_COLOUR_DISTANCE, nearest, UNKNOWN), distance


def label_components(classes: np.ndarray) -> np.ndarray:
    """4-connected components of equal, non-negative class. Labels 0..n-1, -1 elsewhere. [H, W]

    Min-label propagation with pointer jumping, all in numpy: each pixel's label is the index of a
    pixel of its component, so `flat[label]` jumps towards the component's smallest index.
    """
    h, w = classes.shape
    valid = classes >= 0
    big = h * w
    labels = np.where(valid, np.arange(big).reshape(h, w), big)
    join_x = valid[:, :-1] & (classes[:, :-1] == classes[:, 1:])  # pixel and its right neighbour
    join_y = valid[:-1, :] & (classes[:-1, :] == classes[1:, :])  # pixel and the one below
    while True:
        new = labels.copy()
        new[:, :-1] = np.where(join_x, np.minimum(new[:, :-1], labels[:, 1:]), new[:, :-1])
        new[:, 1:] = np.where(join_x, np.minimum(new[:, 1:], labels[:, :-1]), new[:, 1:])
        new[:-1, :] = np.where(join_y, np.minimum(new[:-1, :], labels[1:, :]), new[:-1, :])
        new[1:, :] = np.where(join_y, np.minimum(new[1:, :], labels[:-1, :]), new[1:, :])
        flat = np.append(new.ravel(), big)
        new = flat[new]
        if np.array_equal(new, labels):
            break
        labels = new
    _, dense = np.unique(labels, return_inverse=True)
    dense = dense.reshape(h, w)
    return np.where(valid, dense, -1)


def fill_holes(mask: np.ndarray) -> np.ndarray:
    """The mask with every region it encloses filled in."""
    padded = np.pad(mask, 1)
    outside_labels = label_components(np.where(padded, -1, 0))
    outside = outside_labels == outside_labels[0, 0]
    return ~outside[1:-1, 1:-1]


def erode(mask: np.ndarray, steps: int) -> np.ndarray:
    """3x3 binary erosion, `steps` times."""
    for _ in range(steps):
        p = np.pad(mask, 1)
        mask = mask & p[:-2, 1:-1] & p[2:, 1:-1] & p[1:-1, :-2] & p[1:-1, 2:] & p[:-2, :-2] & p[:-2, 2:] & p[2:, :-2] & p[2:, 2:]
    return mask


def classify_shape(filled: np.ndarray) -> str:
    """circle / square / triangle / diamond from a hole-filled blob cropped to its box.

    Only the triangle is top-heavy one way (it points up); of the symmetric shapes, a square fills
    its box, a circle pi/4 of it and a diamond half. Blur rounds corners, so the cuts sit low."""
    h, w = filled.shape
    third = max(1, h // 3)
    upper, lower = filled[:third].sum(1).mean(), filled[h - third:].sum(1).mean()
    if upper < 0.45 * lower:
        return "triangle"
    fill_ratio = filled.mean()
    if fill_ratio < CIRCLE_FILL:
        return "diamond"
    k = max(1, round(0.15 * min(h, w)))  # corner blocks a circle leaves empty
    corners = np.concatenate([filled[:k, :k], filled[:k, -k:], filled[-k:, :k], filled[-k:, -k:]], axis=None)
    return "square" if fill_ratio >= SQUARE_FILL or corners.mean() >= 0.5 else "circle"


def classify_size(extent: float) -> str:
    return "small" if extent < SIZE_BOUNDS[0] else "medium" if extent < SIZE_BOUNDS[1] else "large"


def classify_style(rgb: np.ndarray, filled: np.ndarray, colour: np.ndarray, backdrop: np.ndarray | None) -> str:
    """outline when the deepest part of the hole-filled blob shows the backdrop, not the blob's colour."""
    deepest = filled
    while True:
        inner = erode(deepest, 1)
        if not inner.any():
            break
        deepest = inner
    centre = rgb[deepest].astype(np.float32).mean(0)
    to_backdrop = MAX_COLOUR_DISTANCE if backdrop is None else np.linalg.norm(centre - backdrop)
    return "filled" if np.linalg.norm(centre - colour) <= to_backdrop else "outline"


def dilate(mask: np.ndarray, steps: int) -> np.ndarray:
    """3x3 binary dilation, `steps` times."""
    for _ in range(steps):
        p = np.pad(mask, 1)
        mask = mask | p[:-2, 1:-1] | p[2:, 1:-1] | p[1:-1, :-2] | p[1:-1, 2:] | p[:-2, :-2] | p[:-2, 2:] | p[2:, :-2] | p[2:, 2:]
    return mask


def mixture_mask(rgb: np.ndarray, colour: np.ndarray, backdrop: np.ndarray) -> np.ndarray:
    """Pixels at least half-way from `backdrop` to `colour` and near the line between them.

    Blur mixes an edge pixel linearly between the two colours, so thresholding the mixing weight at
    one half puts the edge back where it was drawn; thin strokes survive blur that would push their
    pixels out of the palette. [H, W] bool
    """
    direction = colour - backdrop
    offset = rgb.astype(np.float32) - backdrop
    weight = (offset @ direction) / float(direction @ direction)
    residual = np.linalg.norm(offset - weight[..., None] * direction, axis=-1)
    return (weight >= 0.5) & (weight <= MAX_MIXING_WEIGHT) & (residual <= MAX_COLOUR_DISTANCE)


def refine(rgb: np.ndarray, classes: np.ndarray, settled: np.ndarray, mask: np.ndarray,
           colour_index: int) -> tuple[np.ndarray, int | None]:
    """A blob's full-image mask redrawn at the half-way point between its colour and what surrounds it,
    and the palette index of what surrounds it (None if nothing known does). Pixels `settled` as some
    palette colour are never taken (plain gray lies half-way between red and cyan)."""
    ring = dilate(mask, 3) & ~dilate(mask, 1)
    around = classes[ring & (classes >= 0) & (classes != colour_index)]
    if around.size == 0:
        return mask, None
    backdrop = int(np.bincount(around).argmax())
    near = dilate(mask, 2) & ~settled
    refined = np.zeros_like(mask)
    refined[near] = mixture_mask(rgb[near][None], PALETTE[colour_index], PALETTE[backdrop])[0]
    return refined | mask, backdrop


def _border_vote(classes: np.ndarray) -> str | None:
    known = classes[classes >= 0]
    return PALETTE_NAMES[np.bincount(known).argmax()] if known.size else None


def analyse(image) -> Analysis:
    """Segment an image into palette-coloured blobs with their shape, size and style."""
    rgb = to_array(image)
    size = rgb.shape[0]
    assert rgb.shape[1] == size, "toy-world images are square"
    classes, distance = classify_pixels(rgb)
    settled = distance <= SETTLED_DISTANCE
    labels = label_components(np.where(classes < NUM_OBJECT_COLOURS, classes, UNKNOWN))
    min_area = max(4, round(0.004 * size * size))
    blobs = []
    for index in range(labels.max() + 1):
        component = labels == index
        area = int(component.sum())
        if area < min_area // 4 or area > MAX_OBJECT_AREA * size * size:  # blur can shrink a small blob's core a lot
            continue
        colour_index = int(classes[component][0])
        component, backdrop = refine(rgb, classes, settled, component, colour_index)
        ys, xs = np.nonzero(component)
        if len(ys) < min_area:
            continue
        x0, y0, x1, y1 = xs.min(), ys.min(), xs.max() + 1, ys.max() + 1
        mask = component[y0:y1, x0:x1]
        filled = fill_holes(mask)
        fy, fx = np.nonzero(filled)
        blobs.append(Blob(
            colour=PALETTE_NAMES[colour_index], area=len(ys), box=(int(x0), int(y0), int(x1), int(y1)), mask=mask,
            cx=float((fx.mean() + x0 + 0.5) / size), cy=float((fy.mean() + y0 + 0.5) / size),
            shape=classify_shape(filled), size=classify_size(max(x1 - x0, y1 - y0) / size),
            style=classify_style(rgb[y0:y1, x0:x1], filled, PALETTE[colour_index],
                                 None if backdrop is None else PALETTE[backdrop]),
        ))
    band = max(1, round(BORDER_BAND * size))
    return Analysis(size, rgb, classes, blobs, _border_vote(classes[:band]), _border_vote(classes[-band:]),
                    float((classes == UNKNOWN).mean()))
