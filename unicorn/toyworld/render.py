"""Render a scene to an RGB image, bit-for-bit the same on every machine.

Shapes are rasterised here with numpy (a pixel is inside when its centre is), not with
ImageDraw: Pillow has changed its ellipse rasteriser between releases, and the byte-hash tests
must not depend on the Pillow version. Only +, *, abs, max and sqrt are used (all exactly
rounded in IEEE-754), and text comes from the bitmap font in font.py. Pillow only wraps the array.
"""
from __future__ import annotations

import math

import numpy as np
from PIL import Image

from .font import text_mask, text_scale
from .scene import BACKGROUND_COLOURS, HORIZON, OBJECT_COLOURS, SIZE_FRACTION, TEXT_BAND_CENTRE, Scene

DEFAULT_SIZE = 64
_INV_SQRT2 = 1 / math.sqrt(2)
_TWO_OVER_SQRT5 = 2 / math.sqrt(5)


def outline_width(image_size: int) -> int:
    """Stroke width in pixels of outline-style shapes (style "outline")."""
    return max(3, round(0.15 * SIZE_FRACTION["large"] * image_size))


def horizon_row(image_size: int) -> int:
    return round(HORIZON * image_size)


def inside_depth(shape: str, cx: float, cy: float, extent: float, size: int) -> np.ndarray:
    """How far each pixel centre lies inside the shape's boundary, in pixels (< 0: outside). [H, W]"""
    coords = np.arange(size, dtype=np.float64) + 0.5
    dx = np.abs(coords[None, :] - cx)
    dy = coords[:, None] - cy
    r = extent / 2
    if shape == "circle":
        return r - np.sqrt(dx * dx + dy * dy)
    if shape == "square":
        return r - np.maximum(dx, np.abs(dy))
    if shape == "diamond":
        return (r - dx - np.abs(dy)) * _INV_SQRT2
    if shape == "triangle":  # apex up, base as wide as it is tall
        to_base = r - dy
        to_sides = ((dy + r) / 2 - dx) * _TWO_OVER_SQRT5
        return np.minimum(to_base, to_sides)
    raise ValueError(shape)


def shape_mask(shape: str, cx: float, cy: float, extent: float, size: int, stroke: float | None = None) -> np.ndarray:
    """Bool mask [H, W]: the filled shape, or its outline `stroke` pixels wide."""
    depth = inside_depth(shape, cx, cy, extent, size)
    mask = depth >= 0
    return mask if stroke is None else mask & (depth < stroke)


def render_array(scene: Scene, size: int = DEFAULT_SIZE) -> np.ndarray:
    """The scene as uint8 RGB [size, size, 3]."""
    sky, ground = scene.background.sky_and_ground
    image = np.empty((size, size, 3), dtype=np.uint8)
    image[:] = BACKGROUND_COLOURS[sky]
    image[horizon_row(size):] = BACKGROUND_COLOURS[ground]
    stroke = outline_width(size) if scene.style == "outline" else None
    for obj in scene.objects:  # later objects are drawn on top
        mask = shape_mask(obj.shape, obj.x * size, obj.y * size, SIZE_FRACTION[obj.size] * size, size, stroke)
        image[mask] = OBJECT_COLOURS[obj.colour]
    if scene.text is not None:
        glyphs = text_mask(scene.text.text, text_scale(size))
        h, w = glyphs.shape
        top = round(TEXT_BAND_CENTRE[scene.text.band] * size - h / 2)
        left = round(size / 2 - w / 2)
        assert 0 <= top and top + h <= size and 0 <= left and left + w <= size, "text does not fit the image"
        image[top:top + h, left:left + w][glyphs] = OBJECT_COLOURS[scene.text.colour]
    return image


def render(scene: Scene, size: int = DEFAULT_SIZE) -> Image.Image:
    """The scene as a PIL RGB image."""
    return Image.fromarray(render_array(scene, size), "RGB")
