"""`pipeline.data.imaging`: every format decodes to the same gray image, every bad input is a one-line InputError.

All inputs are real: NIH originals from tests/fixtures, and PNG/JPEG/DICOM files built from them at test time.
"""

from __future__ import annotations

import io
import os
import resource
import struct
import sys
import zlib
from pathlib import Path

import cv2
import numpy as np
import pytest
from dicom_files import dicom_bytes
from pydicom.encaps import encapsulate
from pydicom.uid import JPEG2000, ExplicitVRLittleEndian, JPEGLSLossless

from pipeline.core.errors import InputError
from pipeline.data.imaging import load_image, resize

DATA = Path(__file__).resolve().parents[1] / "fixtures"
GRAY_PNG = DATA / "00000001_000.png"  # 1024x1024 8-bit gray NIH original
RGBA_PNG = DATA / "00000100_000.png"  # 1024x1024 RGBA NIH original (NIH ships some like this)


@pytest.fixture(scope="module")
def gray() -> np.ndarray:
    """A real chest X-ray at 256x256, small enough to keep the DICOM tests fast."""
    image = cv2.imread(str(GRAY_PNG), cv2.IMREAD_UNCHANGED)
    assert image is not None and image.ndim == 2
    return cv2.resize(image, (256, 256), interpolation=cv2.INTER_AREA)


def refused(source: object) -> str:
    """Load `source`, expect an InputError, check its message is one line, and return it."""
    with pytest.raises(InputError) as info:
        load_image(source)
    message = str(info.value)
    assert message and "\n" not in message and "Traceback" not in message
    return message


def min_max(values: np.ndarray) -> np.ndarray:
    values = values.astype(np.float64)
    return np.rint((values - values.min()) * 255 / (values.max() - values.min())).astype(np.uint8)


def write_png(path: Path, image: np.ndarray) -> Path:
    assert cv2.imwrite(str(path), image)
    return path


# --- formats that decode -------------------------------------------------------------------------------------


def test_png_8bit_gray_is_returned_unchanged() -> None:
    image = load_image(GRAY_PNG)
    assert image.dtype == np.uint8 and image.shape == (1024, 1024)
    np.testing.assert_array_equal(image, cv2.imread(str(GRAY_PNG), cv2.IMREAD_GRAYSCALE))


def test_png_rgba_nih_original_drops_alpha_to_gray() -> None:
    raw = cv2.imread(str(RGBA_PNG), cv2.IMREAD_UNCHANGED)
    assert raw.shape == (1024, 1024, 4)  # the real file really is RGBA
    image = load_image(RGBA_PNG)
    assert image.dtype == np.uint8 and image.shape == (1024, 1024)
    np.testing.assert_array_equal(image, cv2.cvtColor(raw, cv2.COLOR_BGRA2GRAY))
    assert np.abs(image.astype(int) - raw[:, :, 0]).max() <= 1  # its colour channels are the same gray


def test_png_rgb_uses_cv2_gray_conversion(tmp_path: Path, gray: np.ndarray) -> None:
    bgr = np.dstack([gray, gray // 2, 255 - gray])
    image = load_image(write_png(tmp_path / "rgb.png", bgr))
    np.testing.assert_array_equal(image, cv2.cvtColor(bgr, cv2.COLOR_BGR2GRAY))


def test_png_16bit_is_min_max_scaled(tmp_path: Path, gray: np.ndarray) -> None:
    wide = gray.astype(np.uint16) * 200 + 1000  # a 16-bit image that uses only part of the range
    image = load_image(write_png(tmp_path / "16bit.png", wide))
    assert image.dtype == np.uint8 and image.shape == gray.shape
    assert image.min() == 0 and image.max() == 255
    assert np.abs(image.astype(int) - min_max(gray)).max() <= 1


@pytest.mark.parametrize("colour", [False, True], ids=["gray", "colour"])
def test_jpeg_decodes(gray: np.ndarray, colour: bool) -> None:
    source = np.dstack([gray, gray, gray]) if colour else gray
    ok, encoded = cv2.imencode(".jpg", source, [cv2.IMWRITE_JPEG_QUALITY, 95])
    assert ok
    image = load_image(encoded.tobytes())
    assert image.dtype == np.uint8 and image.shape == gray.shape
    assert np.abs(image.astype(int) - gray).mean() < 2  # lossy, but the same picture


def test_dicom_monochrome2_8bit_without_window_is_used_as_stored(gray: np.ndarray) -> None:
    narrow = (gray // 2 + 40).astype(np.uint8)  # does not span 0-255: a stretch would move every level
    image = load_image(dicom_bytes(narrow))
    assert image.dtype == np.uint8 and image.shape == gray.shape
    np.testing.assert_array_equal(image, narrow)


def test_dicom_16bit_without_window_is_min_max_scaled(gray: np.ndarray) -> None:
    wide = gray.astype(np.uint16) * 16 + 300  # 12-bit-like stored values: the documented mapping
    np.testing.assert_array_equal(load_image(dicom_bytes(wide)), min_max(wide))


def test_dicom_monochrome1_is_inverted(gray: np.ndarray) -> None:
    mono2 = load_image(dicom_bytes(gray, "MONOCHROME2"))
    mono1 = load_image(dicom_bytes(gray, "MONOCHROME1"))
    assert np.abs(mono1.astype(int) - (255 - mono2.astype(int))).max() <= 1


@pytest.mark.parametrize("several", [False, True], ids=["one-window", "first-of-two-windows"])
def test_dicom_16bit_applies_rescale_then_window(gray: np.ndarray, several: bool) -> None:
    raw = gray.astype(np.uint16) * 16  # 12-bit-like detector values 0..4080
    slope, intercept, center, width = 0.5, -100.0, 900.0, 1000.0
    first_of_two = {"WindowCenter": [center, 300.0], "WindowWidth": [width, 50.0]}
    windows = first_of_two if several else {"WindowCenter": center, "WindowWidth": width}
    data = dicom_bytes(raw, RescaleSlope=slope, RescaleIntercept=intercept, **windows)
    image = load_image(data)
    values = raw * slope + intercept  # the window is in rescaled units: it spans 400..1400
    assert image.dtype == np.uint8 and image.shape == gray.shape
    below, above = values < center - width / 2, values > center + width / 2
    assert below.any() and above.any()
    assert (image[below] == 0).all() and (image[above] == 255).all()
    expected = np.clip(((values - (center - 0.5)) / (width - 1) + 0.5) * 255, 0, 255)
    assert np.abs(image - expected).max() <= 1


# --- every kind of source gives the same array ----------------------------------------------------------------


@pytest.mark.parametrize("kind", ["gray_png", "rgba_png", "dicom"])
def test_path_bytes_and_file_like_give_identical_arrays(tmp_path: Path, gray: np.ndarray, kind: str) -> None:
    if kind == "dicom":
        path = tmp_path / "scan.dcm"
        path.write_bytes(dicom_bytes(gray, "MONOCHROME1"))
    else:
        path = GRAY_PNG if kind == "gray_png" else RGBA_PNG
    data = path.read_bytes()
    from_path = load_image(path)
    upload = io.BytesIO(data)
    upload.read()  # a Streamlit UploadedFile may already have been read: getvalue() still has it all
    with path.open("rb") as handle:
        sources = [str(path), data, bytearray(data), upload, handle]
        for source in sources:
            np.testing.assert_array_equal(load_image(source), from_path)


# --- refusals -------------------------------------------------------------------------------------------------


def test_missing_path_is_refused_with_its_name(tmp_path: Path) -> None:
    message = refused(tmp_path / "nowhere.png")
    assert "nowhere.png" in message and "not found" in message


def test_directory_is_refused(tmp_path: Path) -> None:
    assert "directory" in refused(tmp_path)


def test_empty_bytes_and_empty_file_are_refused(tmp_path: Path) -> None:
    assert "empty" in refused(b"")
    (tmp_path / "empty.png").write_bytes(b"")
    message = refused(tmp_path / "empty.png")
    assert "empty.png" in message and "empty (0 bytes)" in message


def test_truncated_png_is_refused(tmp_path: Path) -> None:
    data = GRAY_PNG.read_bytes()
    (tmp_path / "half.png").write_bytes(data[: len(data) // 2])
    message = refused(tmp_path / "half.png")
    assert message.startswith(str(tmp_path / "half.png") + ": PNG is truncated (no IEND")
    assert "truncated" in refused(data[:20])  # cut inside the header itself


def test_truncated_jpeg_is_refused(gray: np.ndarray) -> None:
    data = cv2.imencode(".jpg", gray)[1].tobytes()
    assert "JPEG is truncated" in refused(data[: len(data) // 2])


def test_text_file_is_refused(tmp_path: Path) -> None:
    path = tmp_path / "labels.png"  # the extension lies: the content decides
    path.write_text("Image Index,Finding Labels\n00000001_000.png,Cardiomegaly\n")
    message = refused(path)
    assert "labels.png" in message and "not a PNG, JPEG or DICOM image" in message


def test_corrupt_dicom_is_refused_without_a_library_traceback(gray: np.ndarray) -> None:
    data = dicom_bytes(gray)
    assert "DICOM pixel data could not be decoded" in refused(data[:-1000])  # truncated inside PixelData
    assert "no pixel data" in refused(data[:400])  # truncated before it
    # Rows stored in 3 bytes: pydicom only fails when the element is read, which must still be caught.
    meta = b"\x02\x00\x10\x00UI\x14\x00" + ExplicitVRLittleEndian.encode() + b"\x00"
    rows = b"\x28\x00\x10\x00US\x03\x00" + b"\x00\x01\x02"  # (0028,0010) Rows: 3 bytes for a 2-byte US
    columns = b"\x28\x00\x11\x00US\x02\x00" + b"\x00\x01"
    pixels = b"\xe0\x7f\x10\x00OB\x00\x00\x04\x00\x00\x00" + b"\x00" * 4
    assert "DICOM could not be read" in refused(b"\x00" * 128 + b"DICM" + meta + rows + columns + pixels)


def test_too_small_image_is_refused_and_64_px_is_accepted(tmp_path: Path, gray: np.ndarray) -> None:
    message = refused(write_png(tmp_path / "small.png", gray[:63, :64]))
    assert "64x63" in message and "64 px minimum" in message
    assert "under the 64 px minimum" in refused(dicom_bytes(gray[:32, :32]))
    assert load_image(write_png(tmp_path / "ok.png", gray[:64, :64])).shape == (64, 64)


def _png_chunk(kind: bytes, payload: bytes) -> bytes:
    return struct.pack(">I", len(payload)) + kind + payload + struct.pack(">I", zlib.crc32(kind + payload))


def _huge_png() -> bytes:
    """A real decompression bomb: a 0.4 MB gray PNG that decodes to 10000x10000 (100 MB) of zeros."""
    compressor = zlib.compressobj(1)
    block = bytes(500 * (1 + 10_000))  # 500 rows, each a filter byte and 10000 pixels
    pixels = b"".join(compressor.compress(block) for _ in range(20)) + compressor.flush()
    header = struct.pack(">IIBBBBB", 10_000, 10_000, 8, 0, 0, 0, 0)
    return b"\x89PNG\r\n\x1a\n" + _png_chunk(b"IHDR", header) + _png_chunk(b"IDAT", pixels) + _png_chunk(b"IEND", b"")


def _huge_jpeg(gray: np.ndarray) -> bytes:
    """A real JPEG whose start-of-frame header is patched to claim 10000x10000."""
    data = bytearray(cv2.imencode(".jpg", gray)[1].tobytes())
    sof = data.index(b"\xff\xc0")
    data[sof + 5 : sof + 9] = struct.pack(">HH", 10_000, 10_000)
    return bytes(data)


@pytest.mark.parametrize("kind", ["png", "jpeg", "dicom"])
def test_decompression_bomb_is_refused_from_the_header(gray: np.ndarray, kind: str) -> None:
    if kind == "png":
        data = _huge_png()
    elif kind == "jpeg":
        data = _huge_jpeg(gray)
    else:  # Rows/Columns claim 10000x10000 over a tiny PixelData
        data = dicom_bytes(gray, Rows=10_000, Columns=10_000)
    assert len(data) < 1_000_000
    mib = 2**20 if sys.platform == "darwin" else 2**10  # ru_maxrss is bytes on macOS, KiB on Linux
    peak_before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / mib
    message = refused(data)
    assert "10000x10000" in message and "50 megapixel limit" in message
    # Decoding the PNG would fill 100 MB; the refusal must come before any pixel buffer exists.
    assert resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / mib - peak_before < 50


def test_dicom_without_pixel_data_is_refused(tmp_path: Path) -> None:
    path = tmp_path / "scan.dcm"
    path.write_bytes(dicom_bytes(None))
    assert refused(path) == f"{path}: DICOM has no pixel data (PixelData missing); export the image with pixels"


def test_colour_dicom_is_refused(gray: np.ndarray) -> None:
    rgb = np.ascontiguousarray(np.dstack([gray, gray, gray]))
    data = dicom_bytes(rgb, "RGB", SamplesPerPixel=3, PlanarConfiguration=0)
    message = refused(data)
    assert "colour DICOM" in message and "RGB" in message and "MONOCHROME" in message


@pytest.mark.parametrize("syntax", [JPEG2000, JPEGLSLossless], ids=["jpeg2000", "jpeg-ls"])
def test_compressed_dicom_that_cannot_be_decoded_is_refused(gray: np.ndarray, syntax: str) -> None:
    """JPEG 2000 has a decoder here (Pillow) that fails on the fake frame; JPEG-LS usually has none installed."""
    data = dicom_bytes(gray, syntax=syntax, PixelData=encapsulate([b"\x00" * 64]))
    message = refused(data)
    assert "compressed DICOM" in message and str(syntax) in message and "uncompressed" in message


# --- resize ---------------------------------------------------------------------------------------------------


def test_resize_shrinks_with_area_and_grows_with_linear(gray: np.ndarray) -> None:
    small = resize(gray, 100)
    assert small.shape == (100, 100) and small.dtype == np.uint8
    np.testing.assert_array_equal(small, cv2.resize(gray, (100, 100), interpolation=cv2.INTER_AREA))
    big = resize(gray[:64, :64], 128)
    assert big.shape == (128, 128) and big.dtype == np.uint8
    np.testing.assert_array_equal(big, cv2.resize(gray[:64, :64], (128, 128), interpolation=cv2.INTER_LINEAR))


def unblocked(fifo: Path, call) -> object:
    """``call()`` run in a thread that must finish within 10 s; the FIFO is opened for writing afterwards, so a
    reader blocked on it (the defect) is released instead of hanging the test session."""
    import threading

    outcome: dict[str, object] = {}

    def target() -> None:
        try:
            outcome["value"] = call()
        except Exception as exc:  # noqa: BLE001 - handed to the test below
            outcome["error"] = exc

    thread = threading.Thread(target=target, daemon=True)
    thread.start()
    thread.join(10)
    blocked = thread.is_alive()
    if blocked:
        os.close(os.open(fifo, os.O_WRONLY | os.O_NONBLOCK))
        thread.join(10)
    assert not blocked, f"blocked on the FIFO {fifo}"
    if "error" in outcome:
        raise outcome["error"]  # type: ignore[misc]
    return outcome.get("value")


def test_fifo_is_refused_at_once_without_blocking(tmp_path: Path) -> None:
    fifo = tmp_path / "scan.png"
    os.mkfifo(fifo)
    message = unblocked(fifo, lambda: refused(fifo))
    assert "scan.png" in message and "FIFO" in message and "regular file" in message


def test_symlink_loop_is_reported_as_a_loop(tmp_path: Path) -> None:
    (tmp_path / "a.png").symlink_to(tmp_path / "b.png")
    (tmp_path / "b.png").symlink_to(tmp_path / "a.png")
    message = refused(tmp_path / "a.png")
    assert "loop" in message and "permission" not in message
