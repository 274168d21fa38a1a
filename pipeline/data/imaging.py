"""Turn a PNG, JPEG or DICOM (path, bytes or upload) into the model's 8-bit grayscale input image.

Training, the CLI and the dashboard all call `load_image`, so they can never disagree on how a file
becomes pixels. The format comes from the magic bytes, never the extension, and the dimensions are
read from the header and checked before any pixels are decoded, so a decompression bomb is refused
without allocating it. Every refusal is an `InputError` with a one-line message.
"""

from __future__ import annotations

import functools
import io
import os
import stat
import struct
from typing import Any

import cv2
import numpy as np
import pydicom
from pydicom.multival import MultiValue
from pydicom.pixels import apply_modality_lut, apply_voi_lut, get_decoder

from pipeline.core.errors import InputError, reason

# pydicom lists one failure per plugin on separate lines: keep them all, on one line.
_why = functools.partial(reason, limit=200, all_lines=True)

MAX_PIXELS = 50_000_000  # larger is refused as a likely decompression bomb
MIN_SIDE = 64  # smaller is not a chest X-ray the model can read

PNG_MAGIC = b"\x89PNG\r\n\x1a\n"
JPEG_MAGIC = b"\xff\xd8\xff"
# JPEG start-of-frame markers (baseline, progressive, lossless, arithmetic); C4, C8 and CC are not frames.
JPEG_SOF = {0xC0, 0xC1, 0xC2, 0xC3, 0xC5, 0xC6, 0xC7, 0xC9, 0xCA, 0xCB, 0xCD, 0xCE, 0xCF}


def load_image(source: str | os.PathLike[str] | bytes | bytearray | memoryview | Any) -> np.ndarray:
    """Decode `source` into an H x W uint8 grayscale image: `to_gray` of `load_decoded`.

    `source` is a path, raw bytes, or a file-like object with ``.getvalue()`` or ``.read()`` (a Streamlit
    ``UploadedFile``, an open file). PNG and JPEG: colour is converted to gray (alpha dropped), and a
    16-bit image is min-max scaled to 0-255 over its own range, because X-ray PNGs rarely use the full
    16 bits. DICOM: modality LUT (RescaleSlope/Intercept), then the VOI LUT or the first LINEAR window
    (WindowCenter/WindowWidth); without either, 8-bit stored values are used as stored and deeper ones
    are min-max scaled; then MONOCHROME1 is inverted so bone is always bright.

    Raises
    ------
    InputError
        With one line naming the file, what is wrong and what to do, for anything not decodable.
    """
    return to_gray(load_decoded(source))


def load_decoded(source: str | os.PathLike[str] | bytes | bytearray | memoryview | Any) -> np.ndarray:
    """Decode `source` with its channels kept: H x W, or H x W x 3 RGB, uint8 or uint16 (alpha dropped).

    For checks that need what `load_image` converts away (`pipeline.inference.ood` looks at the colour). DICOM is
    returned already mapped to 8-bit gray, as `load_image` describes. Raises `InputError` as `load_image`.
    """
    name, data = _read(source)
    try:
        if not data:
            raise InputError("file is empty (0 bytes); choose the image file again")
        if data.startswith(PNG_MAGIC):
            _check_size(*_png_size(data))
            image = _decode_raster(data, "PNG")
        elif data.startswith(JPEG_MAGIC):
            _check_size(*_jpeg_size(data))
            image = _decode_raster(data, "JPEG")
        elif data[128:132] == b"DICM":
            image = _decode_dicom(data)
        else:
            raise InputError("not a PNG, JPEG or DICOM image (unrecognised file signature); convert it to PNG")
    except InputError as exc:
        message = f"{name}: {exc}" if name else str(exc)
        raise InputError(" ".join(message.splitlines())) from None
    return image


def to_gray(decoded: np.ndarray) -> np.ndarray:
    """The model's H x W uint8 gray image of a `load_decoded` array (16-bit: min-max over its own range)."""
    image = decoded if decoded.ndim == 2 else cv2.cvtColor(decoded, cv2.COLOR_RGB2GRAY)
    return image if image.dtype == np.uint8 else _min_max(image)


def resize(image: np.ndarray, size: int) -> np.ndarray:
    """Resize to ``size x size`` uint8 (aspect ratio is not kept; NIH images are square).

    Uses area averaging when the image shrinks (no aliasing) and bilinear when it grows.
    """
    if size < 1:
        raise ValueError(f"size must be a positive number of pixels, got {size}")
    height, width = image.shape[:2]
    shrinking = size * size < height * width
    out = cv2.resize(image, (size, size), interpolation=cv2.INTER_AREA if shrinking else cv2.INTER_LINEAR)
    return out.astype(np.uint8, copy=False)


def _read(source: Any) -> tuple[str, bytes]:
    """Return (name for messages, bytes); name is '' when the source carries none."""
    if isinstance(source, (str, os.PathLike)):
        name = os.fspath(source)
        try:
            # Non-blocking open, then a check: a FIFO or a device would otherwise block or never end.
            descriptor = os.open(name, os.O_RDONLY | getattr(os, "O_NONBLOCK", 0))
            with open(descriptor, "rb") as handle:
                if not stat.S_ISREG(os.fstat(descriptor).st_mode):
                    raise InputError(f"{name}: not a regular file (a pipe, socket or device); give an image file")
                return name, handle.read()
        except FileNotFoundError:
            raise InputError(f"{name}: file not found; check the path") from None
        except IsADirectoryError:
            raise InputError(f"{name}: is a directory, not an image file; give the path of one image") from None
        except OSError as exc:
            raise InputError(f"{name}: cannot read file ({exc.strerror}); check its permissions") from None
    if isinstance(source, (bytes, bytearray, memoryview)):
        return "", bytes(source)
    name = getattr(source, "name", "")
    name = name if isinstance(name, str) else ""
    if hasattr(source, "getvalue"):  # whole buffer regardless of the read position (UploadedFile, BytesIO)
        return name, bytes(source.getvalue())
    if hasattr(source, "read"):
        return name, bytes(source.read())
    raise TypeError(f"load_image needs a path, bytes or a file-like object, not {type(source).__name__}")


def _check_size(width: int, height: int) -> None:
    if width * height > MAX_PIXELS:
        raise InputError(
            f"image is {width}x{height} ({width * height / 1e6:.0f} megapixels), over the {MAX_PIXELS // 1_000_000}"
            " megapixel limit (possible decompression bomb); downscale it first"
        )
    if width < MIN_SIDE or height < MIN_SIDE:
        raise InputError(f"image is {width}x{height}, under the {MIN_SIDE} px minimum side; use the full-size image")


def _png_size(data: bytes) -> tuple[int, int]:
    """Width and height from the IHDR chunk, which the PNG spec requires first; also checks IEND is there."""
    if len(data) < 24 or data[12:16] != b"IHDR":
        raise InputError("PNG is truncated or corrupt (no IHDR header); re-export or re-download the file")
    if data.rfind(b"IEND") < 0:  # refuse here rather than let libpng print its own error
        raise InputError("PNG is truncated (no IEND chunk at the end); re-export or re-download the file")
    width, height = struct.unpack(">II", data[16:24])
    return width, height


def _jpeg_size(data: bytes) -> tuple[int, int]:
    """Width and height from the first start-of-frame segment; also checks the scan data is complete."""
    pos = 2
    while pos + 4 <= len(data):
        if data[pos] != 0xFF:
            break
        marker = data[pos + 1]
        if marker == 0xFF:  # fill byte
            pos += 1
            continue
        if marker == 0x01 or 0xD0 <= marker <= 0xD7:  # markers without a length field
            pos += 2
            continue
        (length,) = struct.unpack(">H", data[pos + 2 : pos + 4])
        if marker in JPEG_SOF and pos + 9 <= len(data):
            height, width = struct.unpack(">HH", data[pos + 5 : pos + 9])
            if data.rfind(b"\xff\xd9") < pos:  # the end-of-image marker must follow the frame
                break
            return width, height
        if marker == 0xDA:  # start of scan before any frame header
            break
        pos += 2 + length
    raise InputError("JPEG is truncated or corrupt (no complete frame); re-export or re-download the file")


def _decode_raster(data: bytes, kind: str) -> np.ndarray:
    try:
        image = cv2.imdecode(np.frombuffer(data, np.uint8), cv2.IMREAD_UNCHANGED)
    except cv2.error as exc:
        raise InputError(f"{kind} could not be decoded ({_why(exc)}); re-export the image") from None
    if image is None or image.size == 0:
        raise InputError(f"{kind} could not be decoded (truncated or corrupt); re-export or re-download the file")
    if image.ndim == 3:
        channels = image.shape[2]
        if channels == 1 or channels == 2:  # gray (+ alpha)
            image = image[:, :, 0]
        else:  # OpenCV decodes colour as BGR / BGRA; the alpha channel is dropped
            image = cv2.cvtColor(image, cv2.COLOR_BGR2RGB if channels == 3 else cv2.COLOR_BGRA2RGB)
    _check_size(image.shape[1], image.shape[0])
    return image


def _decode_dicom(data: bytes) -> np.ndarray:
    try:
        ds = pydicom.dcmread(io.BytesIO(data))
        return _dicom_to_gray(ds)
    except InputError:
        raise
    except Exception as exc:  # noqa: BLE001 - pydicom parses lazily and raises many types on malformed elements
        raise InputError(f"DICOM could not be read ({_why(exc)}); re-export the file") from None


def _dicom_to_gray(ds: pydicom.Dataset) -> np.ndarray:
    """Check the header (pixels present, grayscale, size, decodable), then decode and map to 8 bit."""
    if "PixelData" not in ds:
        raise InputError("DICOM has no pixel data (PixelData missing); export the image with pixels")
    photometric = str(ds.get("PhotometricInterpretation", "MONOCHROME2")).upper()
    samples = int(ds.get("SamplesPerPixel", 1) or 1)
    if samples > 1 or photometric not in ("MONOCHROME1", "MONOCHROME2"):
        raise InputError(
            f"colour DICOM (PhotometricInterpretation {photometric}, SamplesPerPixel {samples}) is not supported;"
            " export a grayscale MONOCHROME image"
        )
    if int(ds.get("NumberOfFrames", 1) or 1) > 1:
        raise InputError(f"multi-frame DICOM ({ds.NumberOfFrames} frames) is not supported; export a single frame")
    if "Rows" not in ds or "Columns" not in ds:
        raise InputError("DICOM has no image size (Rows/Columns missing); re-export the file")
    _check_size(int(ds.Columns), int(ds.Rows))

    syntax = ds.file_meta.get("TransferSyntaxUID")
    syntax_name = f"{syntax.name}, {syntax}" if syntax else "missing"
    try:
        decoder = get_decoder(syntax)
    except (NotImplementedError, ValueError, TypeError):
        raise InputError(f"DICOM transfer syntax ({syntax_name}) is not supported; export uncompressed DICOM") from None
    if not decoder.is_available:
        raise InputError(
            f"compressed DICOM ({syntax_name}) has no installed decoder (needs one of:"
            f" {'; '.join(decoder.missing_dependencies)}); install one or export uncompressed DICOM"
        )
    try:
        values = apply_modality_lut(ds.pixel_array, ds)
    except Exception as exc:  # noqa: BLE001 - each decoder plugin raises its own types
        compressed = syntax.is_compressed
        what, fix = ("compressed DICOM", "export it uncompressed") if compressed else ("DICOM", "re-export it")
        raise InputError(f"{what} pixel data could not be decoded ({syntax_name}: {_why(exc)}); {fix}") from None
    window = _window(ds)
    if "VOILUTSequence" in ds:
        image = _min_max(apply_voi_lut(values, ds))
    elif window is not None:
        center, width = window
        # DICOM PS3.3 C.11.2.1.2 LINEAR window: maps [c - 0.5 - (w-1)/2, c - 0.5 + (w-1)/2] to [0, 255]
        scaled = ((values - (center - 0.5)) / (width - 1) + 0.5) * 255
        image = np.rint(np.clip(scaled, 0, 255)).astype(np.uint8)
    elif int(ds.get("BitsStored", 16) or 16) <= 8 and values.min() >= 0 and values.max() <= 255:
        image = values.astype(np.uint8)  # already 8-bit: stretching would move grey levels a PNG keeps
    else:
        image = _min_max(values)  # deeper values without a window: the image's own range to 0-255
    return 255 - image if photometric == "MONOCHROME1" else image


def _window(ds: pydicom.Dataset) -> tuple[float, float] | None:
    """First (WindowCenter, WindowWidth) pair, or None when absent or unusable (width must exceed 1)."""
    center, width = ds.get("WindowCenter"), ds.get("WindowWidth")
    try:  # VM may be 1-n (first is the default) or 0 (empty)
        center = float(center[0] if isinstance(center, MultiValue) else center)
        width = float(width[0] if isinstance(width, MultiValue) else width)
    except (TypeError, ValueError, IndexError):
        return None
    return (center, width) if width > 1 else None


def _min_max(values: np.ndarray) -> np.ndarray:
    """Scale to 0-255 over the image's own range; a constant image becomes all zeros."""
    values = values.astype(np.float64)
    low, high = float(values.min()), float(values.max())
    if high <= low:
        return np.zeros(values.shape, np.uint8)
    return np.rint((values - low) * (255.0 / (high - low))).astype(np.uint8)

