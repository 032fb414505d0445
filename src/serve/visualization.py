"""Colour masks, overlays and legends, as MMSegmentation's `SegLocalVisualizer` and the seed tutorial draw them."""

from __future__ import annotations

from collections.abc import Sequence

import cv2
import numpy as np


def colorize(
    mask: np.ndarray, palette: Sequence[Sequence[int]], ignore_color: Sequence[int] = (0, 0, 0)
) -> np.ndarray:
    """An RGB image `[H, W, 3]` with each class index painted in its palette colour (ignore/unknown in black)."""
    lut = np.zeros((256, 3), dtype=np.uint8)
    lut[:] = np.asarray(ignore_color, dtype=np.uint8)
    pal = np.asarray(palette, dtype=np.uint8).reshape(-1, 3)
    lut[: len(pal)] = pal
    return lut[np.asarray(mask).astype(np.int64).clip(0, 255)]


def overlay(
    image: np.ndarray,
    mask: np.ndarray,
    palette: Sequence[Sequence[int]],
    opacity: float = 0.5,
    num_classes: int | None = None,
) -> np.ndarray:
    """Blend the colour mask into an RGB image; pixels outside the classes (ignore, 255) keep the image."""
    if image.shape[:2] != mask.shape[:2]:
        raise ValueError(f"overlay: image is {image.shape[:2]} but mask is {mask.shape[:2]}")
    num_classes = len(palette) if num_classes is None else num_classes
    image = _rgb(image)
    colour = colorize(mask, palette)
    valid = (np.asarray(mask) < num_classes)[..., None]
    blended = (1.0 - opacity) * image.astype(np.float32) + opacity * colour.astype(np.float32)
    return np.where(valid, blended.round().clip(0, 255).astype(np.uint8), image)


def legend(
    classes: Sequence[str],
    palette: Sequence[Sequence[int]],
    present: Sequence[int] | None = None,
    row_height: int = 20,
    width: int = 180,
) -> np.ndarray:
    """A legend image (RGB): one swatch and name per class (only `present` ones when given)."""
    idx = list(range(len(classes))) if present is None else [int(i) for i in present if 0 <= i < len(classes)]
    img = np.full((max(1, len(idx)) * row_height + 4, width, 3), 255, dtype=np.uint8)
    for row, c in enumerate(idx):
        y = 2 + row * row_height
        corners = (4, y + 2), (row_height, y + row_height - 2)
        cv2.rectangle(img, *corners, tuple(int(v) for v in palette[c]), -1)
        cv2.rectangle(img, *corners, (0, 0, 0), 1)
        cv2.putText(
            img,
            str(classes[c]),
            (row_height + 6, y + row_height - 6),
            cv2.FONT_HERSHEY_SIMPLEX,
            0.45,
            (0, 0, 0),
            1,
            cv2.LINE_AA,
        )
    return img


def with_legend(
    image: np.ndarray,
    classes: Sequence[str],
    palette: Sequence[Sequence[int]],
    present: Sequence[int] | None = None,
) -> np.ndarray:
    """The image with a legend to its right (padded to the taller of the two)."""
    leg = legend(classes, palette, present)
    h = max(image.shape[0], leg.shape[0])
    canvas = np.full((h, image.shape[1] + leg.shape[1], 3), 255, dtype=np.uint8)
    canvas[: image.shape[0], : image.shape[1]] = image
    canvas[: leg.shape[0], image.shape[1] :] = leg
    return canvas


def hatch(
    image: np.ndarray, where: np.ndarray, color: Sequence[int] = (255, 255, 255), spacing: int = 4
) -> np.ndarray:
    """A copy of the image with 1 px diagonal lines every `spacing` px over the pixels where `where` is true:
    marks a region (e.g. ignored labels) while its own pixels stay visible between the lines."""
    where = np.asarray(where, dtype=bool)
    if image.shape[:2] != where.shape:
        raise ValueError(f"hatch: image is {image.shape[:2]} but the region is {where.shape}")
    lines = np.add.outer(np.arange(where.shape[0]), np.arange(where.shape[1])) % spacing == 0
    out = np.array(image, dtype=np.uint8, copy=True)
    out[where & lines] = np.asarray(color, dtype=np.uint8)
    return out


def caption(image: np.ndarray, text: str, height: int = 14, font_scale: float = 0.35) -> np.ndarray:
    """The image under a white strip of `height` px holding `text` (cut to fit the image's width)."""
    image = _rgb(image)
    strip = np.full((height, image.shape[1], 3), 255, dtype=np.uint8)
    while text and cv2.getTextSize(text, cv2.FONT_HERSHEY_SIMPLEX, font_scale, 1)[0][0] > image.shape[1] - 4:
        text = text[:-1]
    cv2.putText(strip, text, (2, height - 4), cv2.FONT_HERSHEY_SIMPLEX, font_scale, (0, 0, 0), 1, cv2.LINE_AA)
    return np.concatenate([strip, image], axis=0)


def grid(images: Sequence[np.ndarray], ncols: int, pad: int = 2, fill: int = 255) -> np.ndarray:
    """The images in rows of `ncols`, each top-left in a cell as large as the largest one, `pad` px apart
    (and from the border). Grey images are drawn as RGB."""
    if not images:
        raise ValueError("grid: no images to lay out")
    if ncols < 1:
        raise ValueError(f"grid: ncols={ncols}; expected at least 1")
    tiles = [_rgb(img) for img in images]
    cell_h = max(t.shape[0] for t in tiles)
    cell_w = max(t.shape[1] for t in tiles)
    ncols = min(ncols, len(tiles))
    nrows = -(-len(tiles) // ncols)
    canvas = np.full((nrows * (cell_h + pad) + pad, ncols * (cell_w + pad) + pad, 3), fill, dtype=np.uint8)
    for k, tile in enumerate(tiles):
        y = pad + (k // ncols) * (cell_h + pad)
        x = pad + (k % ncols) * (cell_w + pad)
        canvas[y : y + tile.shape[0], x : x + tile.shape[1]] = tile
    return canvas


def _rgb(image: np.ndarray) -> np.ndarray:
    image = np.asarray(image, dtype=np.uint8)
    return np.repeat(image[..., None], 3, axis=2) if image.ndim == 2 else image


def prediction_panel(
    image: np.ndarray,
    pred: np.ndarray,
    palette: Sequence[Sequence[int]],
    classes: Sequence[str] | None = None,
    gt: np.ndarray | None = None,
    opacity: float = 0.5,
    titles: bool = True,
    ignore_index: int = 255,
) -> np.ndarray:
    """image | ground truth | prediction side by side (RGB), as MMSegmentation's visualiser draws a sample.

    Ground truth and prediction are palette overlays; ignored ground-truth pixels are hatched. Without `gt` the
    panel is image | prediction. With `classes`, a legend of the classes present in either mask is appended.
    """
    image = _rgb(image)
    tiles = [("image", image)]
    if gt is not None:
        gt = np.asarray(gt)
        gt_vis = hatch(overlay(image, gt, palette, opacity), gt == ignore_index)
        tiles.append(("ground truth", gt_vis))
    tiles.append(("prediction", overlay(image, pred, palette, opacity)))
    shown = [caption(t, name) if titles else t for name, t in tiles]
    canvas = grid(shown, ncols=len(shown))
    if classes is None:
        return canvas
    labels = np.unique(np.concatenate([np.asarray(m).ravel() for m in (pred, gt) if m is not None]))
    return with_legend(canvas, classes, palette, present=[int(v) for v in labels if v < len(classes)])


def normalized_confusion(confmat: np.ndarray) -> np.ndarray:
    """Rows (ground truth) divided by their sums, so each row with labelled pixels sums to 1; empty rows stay 0."""
    cm = np.asarray(confmat, dtype=np.float64)
    totals = cm.sum(axis=1, keepdims=True)
    return np.divide(cm, totals, out=np.zeros_like(cm), where=totals > 0)


def plot_confusion_matrix(
    confmat: np.ndarray,
    classes: Sequence[str],
    path: str | None = None,
    title: str = "Confusion matrix (rows: ground truth, normalised to 1)",
) -> np.ndarray:
    """The row-normalised confusion matrix as a picture (RGB array; also saved to `path` when given).

    Drawn with matplotlib (headless Agg canvas); the figure grows with the number of classes, and the cell
    values are written only when there are at most 30 classes (beyond, they would not be readable).
    """
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    norm = normalized_confusion(confmat)
    n = len(classes)
    if norm.shape != (n, n):
        raise ValueError(f"plot_confusion_matrix: matrix is {norm.shape} but there are {n} classes")
    side = min(4 + 0.45 * n, 40)
    fig = Figure(figsize=(side + 1.5, side), dpi=100)
    canvas = FigureCanvasAgg(fig)  # no pyplot: no global state, no display needed
    ax = fig.add_subplot()
    im = ax.imshow(norm, cmap="Blues", vmin=0.0, vmax=1.0)
    fig.colorbar(im, ax=ax, fraction=0.046, pad=0.04)
    ax.set_xticks(range(n), [str(c) for c in classes], rotation=45, ha="right", fontsize=8)
    ax.set_yticks(range(n), [str(c) for c in classes], fontsize=8)
    ax.set_xlabel("prediction")
    ax.set_ylabel("ground truth")
    ax.set_title(title, fontsize=10)
    if n <= 30:
        for r in range(n):
            for c in range(n):
                value = norm[r, c]
                ax.text(
                    c, r, f"{value:.2f}", ha="center", va="center", fontsize=7,
                    color="white" if value > 0.5 else "black",
                )  # fmt: skip
    fig.tight_layout()
    canvas.draw()
    rgb = np.asarray(canvas.buffer_rgba())[..., :3].copy()
    if path is not None:
        fig.savefig(path)
    return rgb
