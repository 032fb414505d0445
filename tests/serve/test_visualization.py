"""Overlays, legends, panels and the confusion-matrix picture: the palette colours land where the mask says."""

from __future__ import annotations

import cv2
import numpy as np
import pytest

from src.data.io import load_image
from src.serve.visualization import (
    colorize,
    legend,
    normalized_confusion,
    overlay,
    plot_confusion_matrix,
    prediction_panel,
    with_legend,
)

PALETTE = [[0, 0, 0], [255, 0, 0], [0, 200, 50], [20, 40, 250]]
CLASSES = ["background", "red", "green", "blue"]


@pytest.fixture
def sample() -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(0)
    image = rng.integers(0, 256, (24, 30, 3), dtype=np.uint8)
    mask = np.zeros((24, 30), dtype=np.uint8)
    mask[2:10, 3:12] = 1
    mask[12:20, 15:28] = 2
    mask[0:2, :] = 255  # ignored
    return image, mask


def test_colorize_paints_palette_colours_and_ignore_in_black(sample):
    _, mask = sample
    colour = colorize(mask, PALETTE)
    for c, rgb in enumerate(PALETTE):
        assert (colour[mask == c] == rgb).all()
    assert (colour[mask == 255] == 0).all()


def test_overlay_blends_palette_colour_where_the_mask_says_and_keeps_ignored_pixels(sample, tmp_path):
    image, mask = sample
    vis = overlay(image, mask, PALETTE, opacity=0.4)
    palette = np.asarray(PALETTE, dtype=np.float64)
    for c in range(3):
        where = mask == c
        expected = np.round(0.6 * image[where] + 0.4 * palette[c]).astype(np.uint8)
        np.testing.assert_array_equal(vis[where], expected)
    np.testing.assert_array_equal(vis[mask == 255], image[mask == 255])
    # opacity 1 paints the palette colour itself
    full = overlay(image, mask, PALETTE, opacity=1.0)
    assert (full[mask == 1] == PALETTE[1]).all() and (full[mask == 2] == PALETTE[2]).all()
    # written and read back as the same pixels
    path = tmp_path / "overlay.png"
    assert cv2.imwrite(str(path), cv2.cvtColor(vis, cv2.COLOR_RGB2BGR)) and path.stat().st_size > 0
    np.testing.assert_array_equal(load_image(path), vis)


def test_overlay_of_mismatched_sizes_is_a_clear_error(sample):
    image, mask = sample
    with pytest.raises(ValueError, match=r"image is \(24, 30\) but mask is \(10, 10\)"):
        overlay(image, mask[:10, :10], PALETTE)


def test_legend_has_one_swatch_per_present_class_in_its_colour(tmp_path):
    img = legend(CLASSES, PALETTE, present=[1, 3], row_height=20)
    assert img.shape == (2 * 20 + 4, 180, 3)
    # swatch interiors (inside the 1 px black frame) of rows 0 and 1
    for row, c in enumerate([1, 3]):
        y = 2 + row * 20
        swatch = img[y + 4 : y + 16, 6:18]
        assert (swatch == PALETTE[c]).all(), c
    # text was drawn (dark pixels to the right of the swatches)
    assert (img[:, 30:] < 128).any()
    path = tmp_path / "legend.png"
    assert cv2.imwrite(str(path), img) and path.stat().st_size > 0


def test_with_legend_keeps_the_image_and_adds_the_legend_on_its_right(sample):
    image, mask = sample
    vis = overlay(image, mask, PALETTE)
    out = with_legend(vis, CLASSES, PALETTE)
    assert out.shape == (max(24, 4 * 20 + 4), 30 + 180, 3)
    np.testing.assert_array_equal(out[:24, :30], vis)


def test_prediction_panel_is_image_ground_truth_prediction_with_legend(sample):
    image, gt = sample
    pred = np.where(gt == 255, 0, gt).astype(np.uint8)
    pred[20:, :] = 3
    panel = prediction_panel(image, pred, PALETTE, CLASSES, gt=gt, opacity=1.0, titles=False)
    pad = 2
    tiles_w = 3 * (30 + pad) + pad
    # legend of the classes present in either mask: 0, 1, 2, 3 -> 4 rows
    assert panel.shape == (max(24 + 2 * pad, 4 * 20 + 4), tiles_w + 180, 3)
    np.testing.assert_array_equal(panel[pad : pad + 24, pad : pad + 30], image)
    pred_tile = panel[pad : pad + 24, pad + 2 * (30 + pad) : pad + 2 * (30 + pad) + 30]
    np.testing.assert_array_equal(pred_tile, colorize(pred, PALETTE))
    gt_tile = panel[pad : pad + 24, pad + 30 + pad : pad + 30 + pad + 30]
    assert (gt_tile[gt == 2] == PALETTE[2]).all()
    # without ground truth: image | prediction
    two = prediction_panel(image, pred, PALETTE, gt=None, titles=False)
    assert two.shape == (24 + 2 * pad, 2 * (30 + pad) + pad, 3)


def test_normalized_confusion_rows_sum_to_one_and_empty_rows_stay_zero():
    cm = np.array([[8, 2, 0], [1, 1, 2], [0, 0, 0]])
    norm = normalized_confusion(cm)
    np.testing.assert_allclose(norm.sum(1), [1.0, 1.0, 0.0])
    np.testing.assert_allclose(norm[0], [0.8, 0.2, 0.0])
    np.testing.assert_allclose(norm[1], [0.25, 0.25, 0.5])


def test_confusion_matrix_picture_is_written(tmp_path):
    path = tmp_path / "cm.png"
    rgb = plot_confusion_matrix(np.array([[5, 1], [0, 4]]), ["a", "b"], str(path))
    assert rgb.ndim == 3 and rgb.shape[2] == 3 and rgb.std() > 0
    assert path.stat().st_size > 0 and load_image(path).shape[:2] == rgb.shape[:2]
    with pytest.raises(ValueError, match="2 classes"):
        plot_confusion_matrix(np.eye(3), ["a", "b"])
