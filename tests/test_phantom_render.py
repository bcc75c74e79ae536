"""render_phantom: 8-bit images of the asked size, reproducible by seed, strict about its inputs."""

from __future__ import annotations

import numpy as np
import pytest

from shared.errors import ConfigError, LabelError
from shared.labels import NIH_LABELS
from site_node.phantom import get_style, render_phantom
from site_node.phantom.overlay import text_bitmap


@pytest.mark.parametrize("resolution_px", [64, 128, 256])
def test_images_are_8bit_and_square_at_every_resolution(resolution_px: int) -> None:
    image = render_phantom(["Effusion"], np.random.default_rng(0), "hospital-a", resolution_px)
    assert image.dtype == np.uint8
    assert image.shape == (resolution_px, resolution_px)
    assert image.min() < 40 and image.max() > 200, "a radiograph spans dark lung to bright bone"


@pytest.mark.parametrize("label", NIH_LABELS)
def test_every_label_renders(label: str) -> None:
    image = render_phantom([label], np.random.default_rng(1), "hospital-b", 128)
    assert image.shape == (128, 128) and image.dtype == np.uint8


def test_multi_label_images_render() -> None:
    labels = ["Cardiomegaly", "Effusion", "Edema", "Atelectasis"]
    assert render_phantom(labels, np.random.default_rng(2)).shape == (256, 256)


@pytest.mark.parametrize("style", ["hospital-a", "hospital-b"])
def test_same_seed_same_pixels_other_seed_other_pixels(style: str) -> None:
    first = render_phantom(["Nodule"], np.random.default_rng(5), style)
    again = render_phantom(["Nodule"], np.random.default_rng(5), style)
    other = render_phantom(["Nodule"], np.random.default_rng(6), style)
    np.testing.assert_array_equal(first, again)
    assert np.abs(first.astype(int) - other.astype(int)).mean() > 2


def test_empty_labels_mean_no_finding() -> None:
    np.testing.assert_array_equal(
        render_phantom([], np.random.default_rng(3)),
        render_phantom(["No Finding"], np.random.default_rng(3)),
    )


def test_unknown_label_is_rejected_with_a_suggestion() -> None:
    with pytest.raises(LabelError, match="did you mean 'Effusion'"):
        render_phantom(["Efusion"], np.random.default_rng(0))


def test_no_finding_cannot_be_combined_with_a_finding() -> None:
    with pytest.raises(LabelError, match="No Finding"):
        render_phantom(["No Finding", "Mass"], np.random.default_rng(0))


def test_unknown_style_and_tiny_resolution_are_rejected() -> None:
    with pytest.raises(ConfigError, match="hospital-a, hospital-b"):
        render_phantom([], np.random.default_rng(0), "hospital-c")
    with pytest.raises(ConfigError, match="resolution_px"):
        render_phantom([], np.random.default_rng(0), "hospital-a", 16)


def test_glyph_bitmaps_have_the_asked_height_and_read_left_to_right() -> None:
    bitmap = text_bitmap("LR", 14)
    assert bitmap.shape[0] == 14
    left, right = bitmap[:, : bitmap.shape[1] // 2], bitmap[:, bitmap.shape[1] // 2 :]
    assert left[-1].sum() > left[0].sum(), "L: a foot wider than its top"
    assert right[0].sum() > right[-1].sum(), "R: a bowl wider than its leg"


def test_laterality_marker_is_burned_into_the_styled_corner() -> None:
    def white_pixels_left_right(corner: str) -> tuple[float, float]:
        style = get_style("hospital-a").model_copy(
            update={
                "laterality_corner": corner,
                "view_marker_probability": 0.0,
                "portable_marker_probability": 0.0,
            }
        )
        images = [render_phantom([], np.random.default_rng(s), style, 256) for s in range(4)]
        white = np.mean([(x[:40] >= 245).astype(float) for x in images], axis=0)
        return float(white[:, :64].sum()), float(white[:, -64:].sum())

    left, right = white_pixels_left_right("top-right")  # "L": the patient's left
    assert right > 20 and left < 2, (left, right)
    left, right = white_pixels_left_right("top-left")  # "R": the patient's right
    assert left > 20 and right < 2, (left, right)
