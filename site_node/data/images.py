"""Decode a radiograph file (PNG 8/16-bit, JPEG, DICOM, ...) to grey levels in [0, 255].

The format is told by the file's bytes, not its name (PNG/JPEG signatures, the DICOM
``DICM`` preamble; a ``.dcm``/``.dicom`` name without a preamble is read as DICOM too;
anything else Pillow can open is tried last). Intensity rules:

* 8-bit sources (Pillow modes L, P, RGB, ...) keep their grey levels exactly (colour is
  reduced with Pillow's ITU-R 601-2 luma); no normalisation, as in the team's data.
* Deeper sources (16-bit PNG, float TIFF) are stretched min-max onto [0, 255], as Han
  et al. did ("intensity values were normalized to the range 0-255").
* DICOM: modality LUT (rescale slope/intercept), then the VOI LUT or window via
  ``pydicom.pixels.apply_voi_lut`` when the file has one, mapped linearly from that
  transform's output range (its response to the extremes of its input) onto [0, 255];
  without VOI, min-max. MONOCHROME1 (bright = low values) is inverted last, so
  bone is bright and later zero padding is black.

The result stays float32 so that no rounding happens before resizing.
"""

from __future__ import annotations

import io
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pydicom
from PIL import Image
from pydicom.pixels import apply_modality_lut, apply_voi_lut

from shared.errors import ImageDecodeError
from site_node.data.records import normalise_view

__all__ = ["DecodedImage", "decode_image", "decode_image_bytes", "sniff_format"]

_EIGHT_BIT_MODES = frozenset({"1", "L", "LA", "P", "PA", "RGB", "RGBA", "RGBX", "CMYK", "YCbCr"})


@dataclass(frozen=True)
class DecodedImage:
    """Grey levels of one radiograph: float32 ``[H, W]`` in [0, 255], and where from."""

    pixels: np.ndarray
    source_format: str
    bits_stored: int
    view: str | None = None  # DICOM ViewPosition, when the file has one


def sniff_format(data: bytes, name: str) -> str:
    """``png``, ``jpeg``, ``dicom`` or ``other`` (left to Pillow) from the leading bytes."""
    if data.startswith(b"\x89PNG\r\n\x1a\n"):
        return "png"
    if data.startswith(b"\xff\xd8\xff"):
        return "jpeg"
    if data[128:132] == b"DICM" or name.lower().endswith((".dcm", ".dicom")):
        return "dicom"
    return "other"


def _min_max(values: np.ndarray) -> np.ndarray:
    values = values.astype(np.float64)
    low, high = float(values.min()), float(values.max())
    if high == low:
        return np.zeros(values.shape, np.float32)  # a blank image; the caller rejects it
    return ((values - low) * (255.0 / (high - low))).astype(np.float32)


def _linear_range(values: np.ndarray, low: float, high: float) -> np.ndarray:
    scaled = (values.astype(np.float64) - low) * (255.0 / (high - low))
    return np.clip(scaled, 0.0, 255.0).astype(np.float32)


def _decode_pil(data: bytes, source_format: str) -> DecodedImage:
    with Image.open(io.BytesIO(data)) as image:
        image.load()  # decode now: truncated or corrupt data raises here
        if image.mode in _EIGHT_BIT_MODES:
            pixels = np.asarray(image.convert("L"), dtype=np.float32)
            return DecodedImage(pixels, source_format, 8)
        raw = np.asarray(image)
        bits = 32 if image.mode in ("I", "F") else 16
        return DecodedImage(_min_max(raw), source_format, bits)


def _has_voi(ds: pydicom.Dataset) -> bool:
    return "VOILUTSequence" in ds or "WindowCenter" in ds


def _dicom_grey(ds: pydicom.Dataset) -> np.ndarray:
    stored = ds.pixel_array
    if stored.ndim != 2:
        raise ValueError(
            f"expected one greyscale frame, got pixel array of shape {stored.shape} "
            f"({ds.get('PhotometricInterpretation', '?')}, {ds.get('NumberOfFrames', 1)} frames)"
        )
    values = apply_modality_lut(stored, ds)
    if not _has_voi(ds):
        return _min_max(values)
    if "VOILUTSequence" in ds:  # a LUT (preferred over a window, as pydicom does) indexes by int
        values = np.rint(values).astype(np.int64)
        probe = np.array([np.iinfo(np.int32).min, np.iinfo(np.int32).max], np.int64)
    else:
        probe = np.array([-(2.0**40), 2.0**40])
    windowed = apply_voi_lut(values, ds)
    low, high = apply_voi_lut(probe, ds).astype(np.float64)
    if not high > low:
        return _min_max(windowed)
    return _linear_range(windowed, float(low), float(high))


def _decode_dicom(data: bytes) -> DecodedImage:
    ds = pydicom.dcmread(io.BytesIO(data), force=True)
    pixels = _dicom_grey(ds)
    if str(ds.get("PhotometricInterpretation", "")).strip().upper() == "MONOCHROME1":
        pixels = np.float32(255.0) - pixels
    return DecodedImage(
        pixels=pixels,
        source_format="dicom",
        bits_stored=int(ds.get("BitsStored", ds.get("BitsAllocated", 0)) or 0),
        view=normalise_view(str(ds.get("ViewPosition", "") or "")),
    )


def decode_image_bytes(data: bytes, *, name: str) -> DecodedImage:
    """Decode an image file's bytes; ``name`` is used for the format hint and errors.

    Raises ImageDecodeError naming the file and the decoder's reason.
    """
    source_format = sniff_format(data, name)
    try:
        if source_format == "dicom":
            decoded = _decode_dicom(data)
        else:
            decoded = _decode_pil(data, source_format)
    # Decoders raise whatever their parsers hit (OSError, ValueError, SyntaxError,
    # struct.error, EOFError, AttributeError, ...): each one means "not decodable".
    except Exception as error:
        raise ImageDecodeError(
            f"{name}: cannot decode as {source_format}: {type(error).__name__}: {error}"
        ) from error
    if decoded.pixels.ndim != 2 or min(decoded.pixels.shape) < 1:
        raise ImageDecodeError(f"{name}: decoded to shape {decoded.pixels.shape}, not 2-D grey")
    return decoded


def decode_image(path: Path) -> DecodedImage:
    """Read and decode one image file (see :func:`decode_image_bytes`)."""
    return decode_image_bytes(Path(path).read_bytes(), name=str(path))
