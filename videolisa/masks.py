"""Compact per-frame boolean masks: packed bits, deflated, so long videos stay small in memory."""

from __future__ import annotations

import os
import zlib
from typing import IO, Iterable, Iterator, Union

import numpy as np
from PIL import Image, UnidentifiedImageError

from .errors import InvalidVideo


class PackedMasks:
    """A sequence of T boolean masks of size H x W, stored as packed bits, deflated.

    Indexing a frame gives a bool [H, W] array; ``np.asarray(masks)`` gives bool [T, H, W].
    Frames can be appended one by one (the pipeline writes masks as it decodes them).
    A mask is a few large regions, so a 1080p frame's 259 KB of packed bits deflate to a few KB (about
    0.2 ms per frame each way): an hour of masks fits in memory. A frame that does not shrink is kept
    as plain packed bits.
    """

    def __init__(self, height: int, width: int, frames: Iterable[np.ndarray] = ()):
        self.height = int(height)
        self.width = int(width)
        self._frames: list[bytes] = []
        self._areas: list[int] = []
        for frame in frames:
            self.append(frame)

    @classmethod
    def from_array(cls, masks: np.ndarray) -> "PackedMasks":
        masks = np.asarray(masks)
        if masks.ndim != 3:
            raise ValueError(f"expected masks of shape [T, H, W], got {masks.shape}")
        return cls(masks.shape[1], masks.shape[2], masks)

    def append(self, mask: np.ndarray) -> None:
        mask = np.asarray(mask)
        if mask.shape != (self.height, self.width):
            raise ValueError(f"mask of shape {mask.shape} does not match {(self.height, self.width)}")
        mask = mask.astype(bool, copy=False)
        bits = np.packbits(mask, axis=None).tobytes()
        deflated = zlib.compress(bits, 1)
        # Only deflated data can be shorter than the packed bits: the length tells the two apart.
        self._frames.append(deflated if len(deflated) < len(bits) else bits)
        self._areas.append(int(np.count_nonzero(mask)))

    @property
    def shape(self) -> tuple[int, int, int]:
        return (len(self._frames), self.height, self.width)

    def __len__(self) -> int:
        return len(self._frames)

    def __getitem__(self, index: int) -> np.ndarray:
        if isinstance(index, slice):
            return self._stack(range(*index.indices(len(self))))
        data = self._frames[index]
        count = self.height * self.width
        if len(data) < (count + 7) // 8:
            data = zlib.decompress(data)
        bits = np.frombuffer(data, np.uint8)
        return np.unpackbits(bits, count=count).reshape(self.height, self.width).view(bool)  # 0/1 bytes: a view

    def __iter__(self) -> Iterator[np.ndarray]:
        for i in range(len(self)):
            yield self[i]

    def _stack(self, indices: range) -> np.ndarray:
        out = np.zeros((len(indices), self.height, self.width), dtype=bool)
        for k, i in enumerate(indices):
            out[k] = self[i]
        return out

    def __array__(self, dtype=None, copy=None) -> np.ndarray:
        out = self._stack(range(len(self)))
        return out if dtype is None else out.astype(dtype)

    def areas(self) -> np.ndarray:
        """Number of foreground pixels per frame, int64 [T]."""
        return np.asarray(self._areas, dtype=np.int64)

    @property
    def nbytes(self) -> int:
        return sum(len(frame) for frame in self._frames)

    def __eq__(self, other: object) -> bool:
        if not isinstance(other, PackedMasks):
            return NotImplemented
        return self.shape == other.shape and self._frames == other._frames

    def __repr__(self) -> str:
        return f"PackedMasks(frames={len(self)}, height={self.height}, width={self.width})"


def open_mask_image(source: Union[str, os.PathLike, IO[bytes]], name: str) -> Image.Image:
    """A mask image from a file a person gave (a path or an open binary file), its pixels decoded.

    Anything Pillow cannot decode whole (not an image, cut short, a damaged chunk, too many pixels) raises
    InvalidVideo naming ``name``: Pillow signals these with OSError, SyntaxError, ValueError or its own error.
    """
    try:
        with Image.open(source) as image:
            image.load()
            return image.copy()  # a closed image cannot be read any more
    except UnidentifiedImageError:
        reason = "not an image file"
    except (OSError, SyntaxError, ValueError, Image.DecompressionBombError) as err:
        reason = str(err).strip().splitlines()[0] if str(err).strip() else type(err).__name__
    raise InvalidVideo(f"The mask {name} is not a readable image ({reason}): replace it with a complete PNG mask.")
