"""Ingest of images: decoders and resizing against independent references, and a folder
mixing good files with a corrupt PNG, a truncated DICOM, a missing file, an unknown
label and other bad rows (issue 2)."""

from __future__ import annotations

import csv
import hashlib
import io
import json
import shutil
import struct
import zlib
from pathlib import Path

import numpy as np
import pandas as pd
import pydicom
import pytest
from PIL import Image
from pydicom.dataset import Dataset, FileMetaDataset
from pydicom.uid import ExplicitVRLittleEndian, SecondaryCaptureImageStorage, generate_uid
from skimage.transform import resize as sk_resize
from typer.testing import CliRunner

from shared.errors import CacheError, ConfigError, ImageDecodeError
from shared.labels import NIH_LABELS
from site_node.cli import app
from site_node.data.cache import SiteCache
from site_node.data.images import decode_image
from site_node.data.ingest import IngestOptions, ingest
from site_node.data.preprocess import (
    build_pyramid,
    pad_to_square,
    resize_lanczos,
    resolution_ladder,
)
from site_node.data.report import IngestReport

# --- independent references -------------------------------------------------------------


def png_decode_reference(path: Path) -> np.ndarray:
    """A from-the-spec PNG decoder (greyscale, 8/16-bit, non-interlaced): zlib + unfilter."""
    data = path.read_bytes()
    assert data[:8] == b"\x89PNG\r\n\x1a\n"
    pos, idat, header = 8, b"", None
    while pos < len(data):
        (length,) = struct.unpack(">I", data[pos : pos + 4])
        kind, body = data[pos + 4 : pos + 8], data[pos + 8 : pos + 8 + length]
        if kind == b"IHDR":
            header = struct.unpack(">IIBBBBB", body)
        elif kind == b"IDAT":
            idat += body
        pos += 12 + length
    width, height, bit_depth, colour_type, _, _, interlace = header
    assert colour_type == 0 and interlace == 0 and bit_depth in (8, 16)
    bpp = bit_depth // 8
    raw, stride = zlib.decompress(idat), width * bpp
    rows, previous = [], bytearray(stride)
    for y in range(height):
        kind, line = (
            raw[y * (stride + 1)],
            bytearray(raw[y * (stride + 1) + 1 : (y + 1) * (stride + 1)]),
        )
        for i in range(stride):
            left = line[i - bpp] if i >= bpp else 0
            up, up_left = previous[i], previous[i - bpp] if i >= bpp else 0
            if kind == 1:
                line[i] = (line[i] + left) & 0xFF
            elif kind == 2:
                line[i] = (line[i] + up) & 0xFF
            elif kind == 3:
                line[i] = (line[i] + (left + up) // 2) & 0xFF
            elif kind == 4:
                p = left + up - up_left
                pa, pb, pc = abs(p - left), abs(p - up), abs(p - up_left)
                pred = left if pa <= pb and pa <= pc else up if pb <= pc else up_left
                line[i] = (line[i] + pred) & 0xFF
        rows.append(bytes(line))
        previous = line
    dtype = ">u2" if bpp == 2 else np.uint8
    return np.frombuffer(b"".join(rows), dtype=dtype).reshape(height, width).astype(np.float64)


def lanczos_weights(size_in: int, size_out: int) -> np.ndarray:
    """Row-normalised Lanczos-3 weights ``[size_out, size_in]``, kernel widened by the
    shrink factor (antialiasing); pixel centres at ``(i + 0.5) * scale``."""
    scale = size_in / size_out
    stretch = max(scale, 1.0)
    weights = np.zeros((size_out, size_in))
    for i in range(size_out):
        centre = (i + 0.5) * scale
        low = max(int(centre - 3 * stretch + 0.5), 0)
        high = min(int(centre + 3 * stretch + 0.5), size_in)
        x = (np.arange(low, high) + 0.5 - centre) / stretch
        kernel = np.sinc(x) * np.sinc(x / 3) * (np.abs(x) < 3)
        weights[i, low:high] = kernel / kernel.sum()
    return weights


def lanczos_reference(image: np.ndarray, size_px: int) -> np.ndarray:
    """Separable antialiased Lanczos-3 resize in float64 numpy."""
    height, width = image.shape
    return lanczos_weights(height, size_px) @ image @ lanczos_weights(width, size_px).T


def dicom_window_reference(x: np.ndarray, center: float, width: float) -> np.ndarray:
    """DICOM PS3.3 C.11.2.1.2.1 linear window onto [0, 255]."""
    low, high = center - 0.5 - (width - 1) / 2, center - 0.5 + (width - 1) / 2
    y = ((x - (center - 0.5)) / (width - 1) + 0.5) * 255
    return np.where(x <= low, 0.0, np.where(x > high, 255.0, y))


def min_max_reference(x: np.ndarray) -> np.ndarray:
    x = x.astype(np.float64)
    return (x - x.min()) / (x.max() - x.min()) * 255


def make_dicom(
    stored: np.ndarray,
    *,
    photometric: str = "MONOCHROME2",
    bits_stored: int = 16,
    window: tuple[float, float] | None = None,
    rescale: tuple[float, float] | None = None,
    view: str | None = "PA",
) -> bytes:
    meta = FileMetaDataset()
    meta.MediaStorageSOPClassUID = SecondaryCaptureImageStorage
    meta.MediaStorageSOPInstanceUID = generate_uid()
    meta.TransferSyntaxUID = ExplicitVRLittleEndian
    ds = Dataset()
    ds.file_meta = meta
    ds.SOPClassUID, ds.SOPInstanceUID = (
        SecondaryCaptureImageStorage,
        meta.MediaStorageSOPInstanceUID,
    )
    ds.Rows, ds.Columns = stored.shape
    ds.SamplesPerPixel, ds.PhotometricInterpretation = 1, photometric
    ds.BitsAllocated, ds.BitsStored, ds.HighBit, ds.PixelRepresentation = (
        16,
        bits_stored,
        bits_stored - 1,
        0,
    )
    if window:
        ds.WindowCenter, ds.WindowWidth = window
    if rescale:
        ds.RescaleSlope, ds.RescaleIntercept = rescale
    if view:
        ds.ViewPosition = view
    ds.PixelData = stored.astype("<u2").tobytes()
    buffer = io.BytesIO()
    ds.save_as(buffer, enforce_file_format=True)
    return buffer.getvalue()


def ramp(height: int, width: int, high: int) -> np.ndarray:
    """A deterministic non-constant test pattern in [0, high]."""
    y, x = np.mgrid[0:height, 0:width]
    return ((x * 7 + y * 13) % (high + 1)).astype(np.uint16)


# --- decoders ----------------------------------------------------------------------------


def test_png_8bit_decodes_exactly_like_the_spec_decoder(site_a: Path) -> None:
    for name in ("00000001_000.png", "00000003_001.png"):
        path = site_a / "images" / name
        np.testing.assert_array_equal(decode_image(path).pixels, png_decode_reference(path))


def test_png_16bit_is_stretched_min_max(tmp_path: Path) -> None:
    stored = ramp(40, 30, 60000).astype(np.uint16) + 500
    Image.fromarray(stored).save(tmp_path / "x.png")
    np.testing.assert_array_equal(png_decode_reference(tmp_path / "x.png"), stored)  # 16-bit file
    decoded = decode_image(tmp_path / "x.png")
    assert decoded.bits_stored == 16
    np.testing.assert_allclose(decoded.pixels, min_max_reference(stored), atol=1e-3)


def test_jpeg_decodes_close_to_its_source(site_a: Path, tmp_path: Path) -> None:
    source = png_decode_reference(site_a / "images" / "00000002_000.png")
    Image.fromarray(source.astype(np.uint8)).save(tmp_path / "x.jpg", quality=95)
    decoded = decode_image(tmp_path / "x.jpg")
    assert decoded.source_format == "jpeg"
    assert np.abs(decoded.pixels - source).mean() <= 2.0  # JPEG q95 loss, in grey levels


def test_dicom_window_and_rescale_follow_the_standard(tmp_path: Path) -> None:
    stored = ramp(32, 48, 4095)
    path = tmp_path / "w.dcm"
    path.write_bytes(make_dicom(stored, bits_stored=12, window=(1500, 1000), rescale=(2.0, -1000)))
    decoded = decode_image(path)
    expected = dicom_window_reference(stored * 2.0 - 1000, 1500, 1000)
    np.testing.assert_allclose(decoded.pixels, expected, atol=1e-3)
    assert (decoded.source_format, decoded.bits_stored, decoded.view) == ("dicom", 12, "PA")


def test_dicom_voi_lut_sequence_is_applied(tmp_path: Path) -> None:
    stored = ramp(16, 16, 300)
    dataset = pydicom.dcmread(io.BytesIO(make_dicom(stored, bits_stored=12, rescale=(2.0, -10))))
    lut = (np.sqrt(np.arange(256) / 255) * 4000 + 50).astype(np.uint16)  # a gamma curve
    item = Dataset()
    item.LUTDescriptor, item.LUTData = [256, 20, 12], lut.astype("<u2").tobytes()
    dataset.VOILUTSequence = [item]
    dataset.save_as(tmp_path / "lut.dcm", enforce_file_format=True)
    # PS3.3 C.11.2.1.1: index = input - first mapped value, clamped to the table.
    index = np.clip(stored.astype(int) * 2 - 10 - 20, 0, 255)
    expected = (lut[index] - 50.0) / 4000 * 255  # the table's own range onto [0, 255]
    np.testing.assert_allclose(decode_image(tmp_path / "lut.dcm").pixels, expected, atol=1e-3)


def test_dicom_monochrome1_16bit_is_inverted(tmp_path: Path) -> None:
    stored = ramp(30, 20, 65535)
    path = tmp_path / "m1.dcm"
    path.write_bytes(make_dicom(stored, photometric="MONOCHROME1", view="AP"))
    decoded = decode_image(path)
    np.testing.assert_allclose(decoded.pixels, 255 - min_max_reference(stored), atol=1e-3)
    assert decoded.view == "AP"


def test_truncated_dicom_and_png_raise_naming_the_file(site_a: Path, tmp_path: Path) -> None:
    dicom = make_dicom(ramp(32, 32, 1000))
    (tmp_path / "t.dcm").write_bytes(dicom[: len(dicom) - 700])
    png = (site_a / "images" / "00000001_000.png").read_bytes()
    (tmp_path / "t.png").write_bytes(png[: len(png) // 2])
    for name in ("t.dcm", "t.png"):
        with pytest.raises(ImageDecodeError, match=name):
            decode_image(tmp_path / name)


# --- preprocessing -----------------------------------------------------------------------


def test_pad_to_square_centres_with_zeros() -> None:
    image = np.arange(1, 13, dtype=np.float32).reshape(3, 4)
    expected = np.zeros((4, 4), np.float32)
    expected[0:3, :] = image  # (4 - 3) // 2 = 0 rows on top, the odd row at the bottom
    np.testing.assert_array_equal(pad_to_square(image), expected)
    tall = np.ones((6, 2), np.float32)
    np.testing.assert_array_equal(pad_to_square(tall), np.pad(tall, ((0, 0), (2, 2))))


def test_resolution_ladder_and_its_errors() -> None:
    assert resolution_ladder(64) == [4, 8, 16, 32, 64]
    assert resolution_ladder(4) == [4]
    for bad in (60, 2, 0):
        with pytest.raises(ConfigError, match=f"{bad}"):
            resolution_ladder(bad)


def test_resize_matches_a_numpy_lanczos(site_a: Path) -> None:
    source = png_decode_reference(site_a / "images" / "00000001_000.png")
    for size_px in (64, 100, 300):  # shrink by 4, by 2.56, and enlarge
        resized = resize_lanczos(source.astype(np.float32), size_px)
        np.testing.assert_allclose(resized, lanczos_reference(source, size_px), atol=1e-3)


def test_pyramid_matches_independent_resizes(site_a: Path) -> None:
    source = png_decode_reference(site_a / "images" / "00000001_000.png")
    pyramid = build_pyramid(source.astype(np.float32), resolution_ladder(64))
    reference = np.clip(lanczos_reference(source, 64), 0, 255)
    assert np.abs(pyramid[64] - reference).max() <= 0.5 + 1e-3  # rounding only
    # A different antialiasing filter (scikit-image: Gaussian, then bilinear) agrees on
    # average; single pixels at sharp edges differ by up to ~20 levels (the filters differ).
    sk_64 = sk_resize(source, (64, 64), anti_aliasing=True, preserve_range=True)
    assert np.abs(pyramid[64] - sk_64).mean() <= 2.0
    # Each lower level is the 2x2 area mean of the one above, within rounding.
    for res_px in (32, 16, 8, 4):
        above = pyramid[res_px * 2].astype(np.float64)
        block_mean = above.reshape(res_px, 2, res_px, 2).mean(axis=(1, 3))
        assert np.abs(pyramid[res_px] - block_mean).max() <= 1.0
        assert pyramid[res_px].dtype == np.uint8 and pyramid[res_px].shape == (res_px, res_px)


# --- a folder with good and bad files ----------------------------------------------------

REAL_ROWS = 6  # the first six rows of site A's labels.csv: patients 1, 2 and 3
MAX_RES_PX = 64
MONO1 = ramp(64, 48, 65535)  # 16-bit MONOCHROME1, portrait: padded left and right
WINDOWED = ramp(40, 64, 4095)  # 12-bit with a window, landscape: padded top and bottom


def _nih_row(header: list[str], **cells: str) -> list[str]:
    return [cells.get(column, "") for column in header]


def _write_images(site_a: Path, images: Path) -> None:
    images.mkdir()
    real = sorted((site_a / "images").iterdir())
    for path in real[: REAL_ROWS + 2]:
        shutil.copy(path, images / path.name)
    (images / "mono1.dcm").write_bytes(make_dicom(MONO1, photometric="MONOCHROME1"))
    (images / "window.dcm").write_bytes(make_dicom(WINDOWED, bits_stored=12, window=(500, 600)))
    dicom = make_dicom(ramp(64, 64, 1000))
    (images / "truncated.dcm").write_bytes(dicom[: len(dicom) // 2])
    png = (site_a / "images" / "00000002_000.png").read_bytes()
    (images / "corrupt.png").write_bytes(png[: len(png) // 3])
    Image.fromarray(
        (png_decode_reference(site_a / "images" / "00000002_000.png") * 100).astype(np.uint16)
    ).save(images / "sixteen.png")
    Image.open(site_a / "images" / "00000002_000.png").save(images / "photo.jpg", quality=95)
    Image.fromarray(np.zeros((32, 32), np.uint8)).save(images / "blank.png")


# (line in the CSV, category, field, value) of every row that must be rejected.
EXPECTED_ISSUES = {
    (12, "decode_error", "Image Index", "corrupt.png"),
    (13, "decode_error", "Image Index", "truncated.dcm"),
    (14, "missing_file", "Image Index", "missing.png"),
    (15, "unknown_label", "Finding Labels", "Pneumonitis"),
    (16, "blank_image", "Image Index", "blank.png"),
    (17, "excluded_view", "View Position", "LL"),
    (18, "duplicate", "Image Index", "00000001_000.png"),
    (19, "malformed_row", "<row>", "only,three,fields"),
}
KEPT_NAMES = [
    "00000001_000.png", "00000001_001.png", "00000001_002.png",
    "00000002_000.png", "00000003_000.png", "00000003_001.png",
    "mono1.dcm", "window.dcm", "sixteen.png", "photo.jpg",
]  # fmt: skip


@pytest.fixture()
def mixed_site(site_a: Path, tmp_path: Path) -> tuple[Path, Path]:
    """A copy of six real site A images plus synthetic good and bad files, and its CSV."""
    images = tmp_path / "images"
    _write_images(site_a, images)
    with open(site_a / "labels.csv", newline="") as handle:
        real = list(csv.reader(handle))
    header = real[0]
    rows = real[1 : REAL_ROWS + 1]
    for name, labels, patient, view in [
        ("mono1.dcm", "No Finding", "90001", "PA"),
        ("window.dcm", "Effusion", "90002", "AP"),
        ("sixteen.png", "Atelectasis", "90003", "PA"),
        ("photo.jpg", "Mass|Nodule", "90004", "PA"),
        ("corrupt.png", "No Finding", "90005", "PA"),
        ("truncated.dcm", "No Finding", "90006", "PA"),
        ("missing.png", "No Finding", "90007", "PA"),
        ("00000003_002.png", "Pneumonitis", "3", "PA"),
        ("blank.png", "No Finding", "90008", "PA"),
        ("00000003_003.png", "Hernia", "3", "LL"),
        ("00000001_000.png", "Cardiomegaly", "1", "PA"),
    ]:
        cells = {"Image Index": name, "Finding Labels": labels, "Patient ID": patient}
        rows.append(_nih_row(header, **cells, **{"View Position": view, "Follow-up #": "0"}))
    rows.append(["only", "three", "fields"])
    csv_path = tmp_path / "labels.csv"
    with open(csv_path, "w", newline="") as handle:
        csv.writer(handle).writerows([header, *rows])
    return csv_path, images


def test_mixed_folder_reports_every_bad_row_and_keeps_every_good_image(
    mixed_site: tuple[Path, Path], tmp_path: Path
) -> None:
    csv_path, images = mixed_site
    result = ingest(
        csv_path, images, tmp_path / "cache", IngestOptions(max_resolution_px=MAX_RES_PX)
    )

    found = {(i.row, i.category.value, i.field, i.value) for i in result.report.issues}
    assert found == EXPECTED_ISSUES
    assert all(issue.reason for issue in result.report.issues)
    counts = result.counts
    assert (counts.rows_read, counts.kept, counts.rejected) == (18, 10, 8)
    assert counts.rows_read == counts.kept + counts.rejected

    cache = SiteCache(tmp_path / "cache")
    assert cache.table.image_index.tolist() == KEPT_NAMES
    for name, sha in zip(cache.table.image_index, cache.table.source_sha256, strict=True):
        assert sha == hashlib.sha256((images / name).read_bytes()).hexdigest()
    photo = cache.table.set_index("image_index").loc["photo.jpg"]
    assert [label for label in NIH_LABELS if photo[label] == 1] == ["Mass", "Nodule"]
    assert cache.manifest.resolutions_px == [4, 8, 16, 32, 64]


def test_mixed_folder_pixels_match_independent_references(
    mixed_site: tuple[Path, Path], tmp_path: Path
) -> None:
    csv_path, images = mixed_site
    ingest(csv_path, images, tmp_path / "cache", IngestOptions(max_resolution_px=MAX_RES_PX))
    cache = SiteCache(tmp_path / "cache")
    row = {name: i for i, name in enumerate(cache.table.image_index)}
    top = cache.images(MAX_RES_PX)

    # Real 8-bit PNGs: spec decoder, then the numpy Lanczos.
    for name in ("00000001_001.png", "00000003_000.png"):
        reference = np.clip(lanczos_reference(png_decode_reference(images / name), 64), 0, 255)
        assert np.abs(top[row[name]] - reference).max() <= 0.5 + 1e-3

    # 64-px-high DICOMs need no resize: the cache is the standard's grey levels, zero-padded.
    mono1 = np.pad(255 - min_max_reference(MONO1), ((0, 0), (8, 8)))
    np.testing.assert_array_equal(top[row["mono1.dcm"]], np.rint(mono1))
    windowed = np.pad(dicom_window_reference(WINDOWED.astype(float), 500, 600), ((12, 12), (0, 0)))
    np.testing.assert_array_equal(top[row["window.dcm"]], np.rint(windowed))
    half = cache.images(32)[row["window.dcm"]]
    assert np.abs(half - windowed.reshape(32, 2, 32, 2).mean(axis=(1, 3))).max() <= 0.5 + 1e-6


def test_report_files_list_every_issue(mixed_site: tuple[Path, Path], tmp_path: Path) -> None:
    csv_path, images = mixed_site
    result = ingest(csv_path, images, tmp_path / "cache", IngestOptions(max_resolution_px=8))
    loaded = IngestReport.model_validate(json.loads(result.report_json.read_text()))
    assert loaded.counts == result.counts and len(loaded.issues) == 8
    markdown = result.report_markdown.read_text()
    for _line, category, _field, value in EXPECTED_ISSUES:
        assert f"| {category} |" in markdown and value in markdown
    manifest_source = SiteCache(tmp_path / "cache").manifest.source
    assert manifest_source["csv_sha256"] == hashlib.sha256(csv_path.read_bytes()).hexdigest()
    assert (
        manifest_source["report_sha256"]
        == hashlib.sha256(result.report_json.read_bytes()).hexdigest()
    )


def test_existing_cache_needs_force_and_foreign_folders_are_refused(
    mixed_site: tuple[Path, Path], tmp_path: Path
) -> None:
    csv_path, images = mixed_site
    out = tmp_path / "cache"
    first = ingest(csv_path, images, out, IngestOptions(max_resolution_px=8))
    with pytest.raises(CacheError, match="--force"):
        ingest(csv_path, images, out, IngestOptions(max_resolution_px=16))
    assert SiteCache(out).manifest.created_utc == first.manifest.created_utc
    ingest(csv_path, images, out, IngestOptions(max_resolution_px=4, force=True))
    assert sorted(p.name for p in out.glob("images_*")) == ["images_4px.npy"]
    with pytest.raises(ConfigError, match="not a radshare cache"):
        ingest(csv_path, images, images, IngestOptions(max_resolution_px=4))


def test_cli_ingest_prints_counts_and_writes_the_cache(
    mixed_site: tuple[Path, Path], tmp_path: Path
) -> None:
    csv_path, images = mixed_site
    out = tmp_path / "cli-cache"
    args = ["ingest", "--csv", str(csv_path), "--images", str(images), "--out", str(out)]
    result = CliRunner().invoke(app, [*args, "--max-resolution", "16", "--site-id", "a"])
    assert result.exit_code == 0, result.output
    assert "rows read 18 = kept 10 + rejected 8" in result.output
    assert SiteCache(out).manifest.site_id == "a"
    again = CliRunner().invoke(app, [*args, "--max-resolution", "16"])
    assert again.exit_code != 0 and isinstance(again.exception, CacheError)


# --- the real sites end to end -----------------------------------------------------------


@pytest.mark.realdata
@pytest.mark.parametrize("site_name, count", [("site_a", 840), ("site_b", 1500)])
def test_real_site_ingests_completely_at_64px(
    site_name: str, count: int, request: pytest.FixtureRequest, tmp_path: Path
) -> None:
    site: Path = request.getfixturevalue(site_name)
    result = ingest(
        site / "labels.csv",
        site / "images",
        tmp_path / "cache",
        IngestOptions(max_resolution_px=64),
    )
    assert (result.counts.rows_read, result.counts.kept, result.counts.rejected) == (
        count,
        count,
        0,
    )

    cache = SiteCache(tmp_path / "cache")
    source = pd.read_csv(site / "labels.csv")
    assert cache.table.image_index.tolist() == source["Image Index"].tolist()
    expected = np.array(
        [[int(n in cell.split("|")) for n in NIH_LABELS] for cell in source["Finding Labels"]]
    )
    np.testing.assert_array_equal(cache.labels(), expected)
    assert (cache.table.groupby("patient_id").split.nunique() == 1).all()
    images_64 = cache.images(64)
    for row in (0, 1, count // 2, count - 1):
        decoded = png_decode_reference(site / "images" / source["Image Index"][row])
        reference = np.clip(lanczos_reference(decoded, 64), 0, 255)
        assert np.abs(images_64[row] - reference).max() <= 0.5 + 1e-3
