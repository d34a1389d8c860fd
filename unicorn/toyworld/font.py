"""A 5x7 bitmap font of capital letters, drawn and read back by template matching.

Defined in code so that text renders identically on every machine (no system fonts). Every glyph
touches all four sides of its 5x7 cell, so a word's bounding box tells the reader exactly where each
letter cell lies.
"""
from __future__ import annotations

import numpy as np

GLYPH_W, GLYPH_H, SPACING = 5, 7, 1  # in font units; one unit is `scale` pixels

_ROWS = {
    "A": ".###. #...# #...# ##### #...# #...# #...#",
    "B": "####. #...# #...# ####. #...# #...# ####.",
    "C": ".###. #...# #.... #.... #.... #...# .###.",
    "D": "####. #...# #...# #...# #...# #...# ####.",
    "E": "##### #.... #.... ####. #.... #.... #####",
    "F": "##### #.... #.... ####. #.... #.... #....",
    "G": ".###. #...# #.... #.### #...# #...# .####",
    "H": "#...# #...# #...# ##### #...# #...# #...#",
    "I": "##### ..#.. ..#.. ..#.. ..#.. ..#.. #####",
    "J": "..### ...#. ...#. ...#. ...#. #..#. .##..",
    "K": "#...# #..#. #.#.. ##... #.#.. #..#. #...#",
    "L": "#.... #.... #.... #.... #.... #.... #####",
    "M": "#...# ##.## #.#.# #.#.# #...# #...# #...#",
    "N": "#...# #...# ##..# #.#.# #..## #...# #...#",
    "O": ".###. #...# #...# #...# #...# #...# .###.",
    "P": "####. #...# #...# ####. #.... #.... #....",
    "Q": ".###. #...# #...# #...# #.#.# #..#. .##.#",
    "R": "####. #...# #...# ####. #.#.. #..#. #...#",
    "S": ".#### #.... #.... .###. ....# ....# ####.",
    "T": "##### ..#.. ..#.. ..#.. ..#.. ..#.. ..#..",
    "U": "#...# #...# #...# #...# #...# #...# .###.",
    "V": "#...# #...# #...# #...# #...# .#.#. ..#..",
    "W": "#...# #...# #...# #.#.# #.#.# #.#.# .#.#.",
    "X": "#...# #...# .#.#. ..#.. .#.#. #...# #...#",
    "Y": "#...# #...# .#.#. ..#.. ..#.. ..#.. ..#..",
    "Z": "##### ....# ...#. ..#.. .#... #.... #####",
}
GLYPHS: dict[str, np.ndarray] = {
    ch: np.array([[c == "#" for c in row] for row in rows.split()], dtype=bool) for ch, rows in _ROWS.items()
}
_LETTERS = sorted(GLYPHS)
_TEMPLATES = np.stack([GLYPHS[ch] for ch in _LETTERS]).astype(np.float32)  # [26, 7, 5]
MAX_MISMATCH = 7.0  # of 35 cells; a worse best match reads as "?"


def text_scale(image_size: int) -> int:
    """Pixels per font unit: 3 at 64 px, 4 at 96 px (3-px strokes survive the 16x16-token codec; 2-px ones did not)."""
    return max(1, round(image_size * 3 / 64))


def text_mask(text: str, scale: int) -> np.ndarray:
    """Bool mask [7*scale, (6*len-1)*scale] of the text in the font."""
    units = np.zeros((GLYPH_H, (GLYPH_W + SPACING) * len(text) - SPACING), dtype=bool)
    for i, ch in enumerate(text):
        units[:, i * (GLYPH_W + SPACING): i * (GLYPH_W + SPACING) + GLYPH_W] = GLYPHS[ch]
    return np.kron(units, np.ones((scale, scale), dtype=bool))


def read_text(mask: np.ndarray) -> str:
    """Read the letters in a bool mask that holds one line of text (and little else)."""
    ys, xs = np.nonzero(mask)
    if len(ys) == 0:
        return ""
    y0, y1, x0, x1 = ys.min(), ys.max() + 1, xs.min(), xs.max() + 1
    box = mask[y0:y1, x0:x1].astype(np.float32)
    h, w = box.shape
    unit_y = h / GLYPH_H
    num_letters = max(1, round((w / unit_y + SPACING) / (GLYPH_W + SPACING)))
    unit_x = w / ((GLYPH_W + SPACING) * num_letters - SPACING)
    # Each pixel centre falls in one font cell; a cell's value is the mean of its pixels.
    cell_y = np.minimum(((np.arange(h) + 0.5) / unit_y).astype(int), GLYPH_H - 1)
    cell_x = ((np.arange(w) + 0.5) / unit_x).astype(int)
    letters = []
    for k in range(num_letters):
        cells = np.zeros((GLYPH_H, GLYPH_W), np.float32)
        counts = np.zeros((GLYPH_H, GLYPH_W), np.float32)
        cols = cell_x - k * (GLYPH_W + SPACING)
        inside = (cols >= 0) & (cols < GLYPH_W)
        for yy in range(GLYPH_H):
            rows = box[cell_y == yy][:, inside]
            if rows.size:
                np.add.at(cells[yy], cols[inside], rows.sum(0))
                np.add.at(counts[yy], cols[inside], rows.shape[0])
        cells /= np.maximum(counts, 1)
        mismatch = np.abs(_TEMPLATES - cells[None]).sum((1, 2))
        best = int(mismatch.argmin())
        letters.append(_LETTERS[best] if mismatch[best] <= MAX_MISMATCH else "?")
    return "".join(letters)
