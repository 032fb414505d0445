"""The one folder dataset every dataset uses, as MMSegmentation's `BaseSegDataset`.

Layout: `data_root/img_dir/<name><img_suffix>` with `data_root/ann_dir/<name><seg_map_suffix>`, the names from a
split file or a recursive scan of `img_dir`. Samples come out as uint8 tensors (masks int64 when a label
exceeds 255): normalisation and `.long()` happen on the device, in the model's data preprocessor.
"""

from __future__ import annotations

import colorsys
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any, ClassVar

import albumentations as A
import numpy as np
import torch
from torch.utils.data import Dataset

from src.data.io import PngTopRows, label_counts, load_image, load_mask, open_top_rows
from src.data.transforms import build_pipeline, seed_pipeline
from src.utils.errors import ConfigError


class BaseSegDataset(Dataset):
    """Args:
    data_root: folder that `img_dir`, `ann_dir` and `split` are relative to.
    img_dir, ann_dir: image and mask folders.
    img_suffix, seg_map_suffix: file endings that pair an image with its mask.
    split: optional text file of names (relative to data_root unless absolute).
    reduce_zero_label: label 0 is "other": map it to 255 and shift the rest down by one (ADE20K).
    label_map: stored label -> training label, applied after reduce_zero_label (e.g. `{11: 255}` makes
        CamVid's void the ignore index); labels not in the map are kept. A mask holding only 0 and 255 (a binary
        mask as annotation tools export it) is refused when no label_map is given, since 255 would be ignored:
        `{255: 1}` makes 255 the foreground, `{255: 255}` says it really is the ignore label.
    classes, palette: override the dataset's METAINFO (a user's own data declares them here).
    pipeline: a list of Albumentations transforms (composed here) or a callable
        `pipeline(image=..., mask=...) -> dict`; seeded from torch's seed (see `seed_pipeline`).
    test_mode: the pipeline transforms the image only; the mask stays at the original resolution, where
        MMSegmentation scores predictions.
    ignore_index: label that is ignored in losses and metrics.
    with_masks: False lists the images alone (`samples` pair them with None), for a test set without labels
        (`src.eval format_only=true`); such a dataset cannot be indexed.
    decoder: how a training sample's files are read: "plain" (whole) or "png_top_rows" (PNGs decoded only as
        far down as the first crop reads, the same samples: the pipeline must start with `RandomResizeCrop`).
    """

    DECODERS: ClassVar[tuple[str, ...]] = ("plain", "png_top_rows")

    METAINFO: ClassVar[dict[str, Any]] = {"classes": None, "palette": None}
    HOW_TO_CREATE: ClassVar[str] = (
        "Put the images and masks there (see the dataset's config in conf/dataset/), "
        "or set paths.data_dir / dataset.data_root to where they are."
    )

    def __init__(
        self,
        data_root: str | Path,
        img_dir: str = "",
        ann_dir: str = "",
        img_suffix: str = ".jpg",
        seg_map_suffix: str = ".png",
        split: str | None = None,
        reduce_zero_label: bool = False,
        label_map: dict[int, int] | None = None,
        classes: Sequence[str] | None = None,
        palette: Sequence[Sequence[int]] | None = None,
        pipeline: Callable[..., dict] | None = None,
        test_mode: bool = False,
        ignore_index: int = 255,
        with_masks: bool = True,
        decoder: str = "plain",
    ) -> None:
        self.data_root = Path(data_root)
        self.with_masks = with_masks
        self.img_dir = self.data_root / img_dir
        self.ann_dir = self.data_root / ann_dir
        self.img_suffix = img_suffix
        self.seg_map_suffix = seg_map_suffix
        self.reduce_zero_label = reduce_zero_label
        self.label_map = self._lut(label_map) if label_map else None
        self.pipeline = build_pipeline(pipeline)
        seed_pipeline(self.pipeline)
        self.test_mode = test_mode
        self.decoder = self._check_decoder(decoder)
        self.ignore_index = ignore_index
        self.metainfo = self.resolve_metainfo(classes, palette)
        self.num_classes = len(self.metainfo["classes"])
        self.split = self.data_root / split if split else None  # an absolute split stays as it is
        self.samples = self._scan()
        self._check_first_mask()

    @classmethod
    def resolve_metainfo(
        cls, classes: Sequence[str] | None = None, palette: Sequence[Sequence[int]] | None = None
    ) -> dict[str, list]:
        """Classes and palette: the arguments override the class's METAINFO; a missing palette is made up."""
        classes = list(classes if classes is not None else cls.METAINFO.get("classes") or [])
        if not classes:
            raise ValueError(f"{cls.__name__}: no classes; give dataset `classes: [...]` in the config")
        palette = palette if palette is not None else cls.METAINFO.get("palette")
        palette = (
            [list(map(int, c)) for c in palette] if palette is not None else default_palette(len(classes))
        )
        if len(palette) != len(classes):
            raise ValueError(f"{cls.__name__}: {len(classes)} classes but {len(palette)} palette colours")
        return {"classes": classes, "palette": palette}

    @staticmethod
    def _lut(label_map: dict[int, int]) -> np.ndarray:
        lut = np.arange(65536, dtype=np.int64)
        for src, dst in dict(label_map).items():
            if not (0 <= int(src) < 65536 and 0 <= int(dst) < 65536):
                raise ValueError(f"label_map {{{src}: {dst}}}: labels must be in 0..65535")
            lut[int(src)] = int(dst)
        return lut

    def _scan(self) -> list[tuple[Path, Path | None]]:
        if not self.img_dir.is_dir():
            raise FileNotFoundError(
                f"{type(self).__name__}: image folder '{self.img_dir}' does not exist "
                f"(data_root='{self.data_root}'). {self.HOW_TO_CREATE}"
            )
        if self.split is not None:
            if not self.split.is_file():
                raise FileNotFoundError(f"{type(self).__name__}: split file '{self.split}' does not exist")
            names = [ln.strip() for ln in self.split.read_text().splitlines() if ln.strip()]
        else:
            names = sorted(
                str(p.relative_to(self.img_dir))[: -len(self.img_suffix)]
                for p in self.img_dir.rglob(f"*{self.img_suffix}")
            )
        if not names:
            raise FileNotFoundError(
                f"{type(self).__name__}: no '*{self.img_suffix}' images in '{self.img_dir}'"
                + (f" listed by '{self.split}'" if self.split else "")
            )
        samples = []
        for name in names:
            img = self.img_dir / f"{name}{self.img_suffix}"
            ann = self.ann_dir / f"{name}{self.seg_map_suffix}"
            if not img.is_file():
                raise FileNotFoundError(
                    f"{type(self).__name__}: image '{img}' (listed in '{self.split}') is missing"
                )
            if self.with_masks and not ann.is_file():
                raise FileNotFoundError(
                    f"{type(self).__name__}: mask '{ann}' for image '{img}' is missing "
                    f"(masks are looked up as ann_dir/<name>{self.seg_map_suffix})"
                )
            samples.append((img, ann if self.with_masks else None))
        return samples

    def __len__(self) -> int:
        return len(self.samples)

    def load_mask(self, path: Path, image_hw: tuple[int, int] | None = None) -> np.ndarray:
        """The index mask of one sample, checked: same size as its image, no label outside the classes."""
        return self.checked_mask(load_mask(path), path, image_hw)

    def checked_mask(
        self, mask: np.ndarray, path: Path, image_hw: tuple[int, int] | None = None, top: bool = False
    ) -> np.ndarray:
        """A decoded mask (`top`: only its top rows) mapped (reduce_zero_label, label_map) and checked."""
        if self.reduce_zero_label:
            # MMSegmentation's uint8 arithmetic: 0 -> ignore, k -> k - 1, and the old 255 stays ignored; the
            # ignore label is this dataset's `ignore_index` (255 in MMSegmentation)
            ignored = (mask == 0) | (mask == 255)
            # uint8 kept where it can be: check_labels' fast label histogram
            small = mask.dtype == np.uint8 and self.ignore_index <= 255
            mask = mask.astype(np.uint8 if small else np.int64) - 1
            mask[ignored] = self.ignore_index
        if self.label_map is not None:
            mask = self.label_map[mask]
        if image_hw is not None and not top:
            self.check_mask_size(mask.shape[:2], path, image_hw)
        self.check_labels(mask, path, top=top)
        if mask.dtype == np.uint8:
            return mask
        return mask.astype(np.uint8) if mask.max(initial=0) <= 255 else mask

    @staticmethod
    def check_mask_size(mask_hw: tuple[int, ...], path: Path, image_hw: tuple[int, ...]) -> None:
        if tuple(mask_hw) != tuple(image_hw[:2]):
            raise ValueError(
                f"Mask '{path}' is {mask_hw[1]}x{mask_hw[0]} (WxH) but its image is "
                f"{image_hw[1]}x{image_hw[0]}; image and mask must have the same size"
            )

    def check_labels(self, mask: np.ndarray, path: Path, top: bool = False) -> None:
        """Raise, naming the file, on labels outside the classes (and on 0/255 masks, `_only_0_and_255`).
        `top`: `mask` is only the top rows; if they hold only 0 and 255, the whole mask decides
        (`PartialMaskUndecided`)."""
        if self._labels_plainly_valid(mask):
            return
        if mask.dtype == np.uint8:
            counts = label_counts(mask)  # OpenCV histogram: half the time of np.bincount
            values = np.flatnonzero(counts)
        else:
            values = np.unique(mask)
        if self._only_0_and_255(values):
            if top:
                raise PartialMaskUndecided(path)
            raise ValueError(binary_255_message(path, self.num_classes))
        bad = [int(v) for v in values if (v >= self.num_classes or v < 0) and v != self.ignore_index]
        if bad:
            raise ValueError(
                f"Mask '{path}' has label values {bad[:10]} outside the {self.num_classes} classes "
                f"(valid: 0..{self.num_classes - 1} and the ignore index {self.ignore_index})"
                + (" after reduce_zero_label" if self.reduce_zero_label else "")
            )

    def _labels_plainly_valid(self, mask: np.ndarray) -> bool:
        """True when a uint8 mask with ignore index 255 certainly passes `check_labels`, from two maxima (ten
        times faster than a histogram); anything else takes the exact path, so the errors are the same.
        The largest label other than 255 is `(mask + 1).max() - 1`, as uint8 wraps 255 to 0."""
        if mask.dtype != np.uint8 or self.ignore_index != 255 or not mask.size:
            return False
        below_255 = int((mask + np.uint8(1)).max()) - 1  # -1: every pixel is 255
        if below_255 >= self.num_classes:
            return False
        return not (below_255 == 0 and int(mask.max()) == 255)  # 0/255 masks: the exact check decides

    def _check_first_mask(self) -> None:
        """Refuse 0/255 masks when the dataset is built, not at the first batch in a loader worker: such masks
        come in whole folders, so the first mask tells."""
        if not self.samples or not self.with_masks or self.label_map is not None or self.reduce_zero_label:
            return
        path = self.samples[0][1]
        try:
            mask = load_mask(path)
        except (OSError, ValueError):
            return  # unreadable: reported with its file when the sample is loaded
        values = np.flatnonzero(label_counts(mask)) if mask.dtype == np.uint8 else []
        if self._only_0_and_255(values):
            raise ValueError(binary_255_message(path, self.num_classes))

    def _only_0_and_255(self, values: Any) -> bool:
        """A stored mask of 0 and 255 only, read with 255 = ignore: its foreground would silently be ignored.
        Only raw masks are judged (a label_map shows the labels were thought about), and only when 255 cannot
        be a class."""
        if self.label_map is not None or self.reduce_zero_label or self.ignore_index != 255:
            return False
        return self.num_classes < 255 and [int(v) for v in values] == [0, 255]

    def _check_decoder(self, decoder: str) -> str:
        """`decoder`, refused (a config error naming what to change) where the pipeline cannot take it."""
        if decoder not in self.DECODERS:
            raise ConfigError(f"dataset decoder='{decoder}': expected one of {list(self.DECODERS)}")
        if decoder == "png_top_rows" and not self.test_mode:
            first = (
                self.pipeline.transforms[0]
                if isinstance(self.pipeline, A.Compose) and self.pipeline.transforms
                else None
            )
            if not (getattr(first, "reads_image_rows", False) and first.p >= 1 and self.pipeline.p >= 1):
                raise ConfigError(
                    f"dataset decoder=png_top_rows decodes the rows the first crop reads, but the training pipeline "
                    f"starts with {type(first).__name__ if first is not None else 'nothing'}",
                    hint="start the pipeline with src.data.transforms.RandomResizeCrop (always applied), or set "
                    "decoder: plain",
                )
        return decoder

    def _first_reads_rows(self, flag: str) -> bool:
        """Whether this training dataset decodes only what the first crop needs (`decoder: png_top_rows`)."""
        return (
            self.decoder == "png_top_rows"
            and not self.test_mode
            and bool(getattr(self.pipeline.transforms[0], flag, False))
        )

    def image_rows(self, path: Path) -> PngTopRows | None:
        """A reader of the image's top rows when the training pipeline's first step reads them
        (`RandomResizeCrop.reads_image_rows`) and the image is a PNG that allows it."""
        return open_top_rows(path) if self._first_reads_rows("reads_image_rows") else None

    def mask_rows(self, path: Path, image_hw: tuple[int, int]) -> MaskTopRows | None:
        """A reader of the checked mask's top rows (`MaskTopRows`), as `image_rows`, for 8-bit grey PNGs."""
        if not self._first_reads_rows("reads_mask_rows"):
            return None
        reader = open_top_rows(path, mask=True)
        if reader is None:
            return None
        self.check_mask_size(reader.shape, path, image_hw)
        return MaskTopRows(self, reader)

    def decode_image(self, path: Path) -> tuple[np.ndarray, PngTopRows | None]:
        """(the image, None), or (a placeholder of its shape, the reader of its top rows: `image_rows`)."""
        rows = self.image_rows(path)
        return (load_image(path), None) if rows is None else (rows.placeholder, rows)

    def decode_mask(self, path: Path, image_hw: tuple[int, int]) -> tuple[np.ndarray, MaskTopRows | None]:
        """(the checked mask, None), or (a placeholder, the reader of its top rows) as `decode_image`."""
        rows = self.mask_rows(path, image_hw)
        return (self.load_mask(path, image_hw), None) if rows is None else (rows.placeholder, rows)

    @staticmethod
    def to_tensors(image: np.ndarray, mask: np.ndarray) -> tuple[torch.Tensor, torch.Tensor]:
        """The `inputs` (CHW uint8) and `masks` tensors of a transformed sample."""
        mask = np.ascontiguousarray(mask)
        inputs = torch.from_numpy(np.ascontiguousarray(image.transpose(2, 0, 1)))
        # uint8 masks stay uint8 (1/8 of the bytes to collate, pin and copy to the device); the data
        # preprocessor and the metrics take `.long()` there. Wider labels travel as int64.
        return inputs, torch.from_numpy(mask if mask.dtype == np.uint8 else mask.astype(np.int64))

    def __getitem__(self, index: int) -> dict[str, Any]:
        img_path, ann_path = self.samples[index]
        image, rows = self.decode_image(img_path)
        mask, mask_rows = self.decode_mask(ann_path, image.shape[:2])
        ori_shape = tuple(image.shape[:2])
        if self.test_mode:
            if self.pipeline is not None:
                image = self.pipeline(image=image)["image"]
        elif self.pipeline is not None:
            readers = {} if rows is None else {"image_rows": rows}
            if mask_rows is not None:
                readers["mask_rows"] = mask_rows
            out = self.pipeline(image=image, mask=mask, **readers)
            image, mask = out["image"], out["mask"]
        inputs, masks = self.to_tensors(image, mask)
        return {
            "inputs": inputs,
            "masks": masks,
            "metas": {
                "img_path": str(img_path),
                "seg_map_path": str(ann_path),
                "ori_shape": ori_shape,
                "img_shape": tuple(image.shape[:2]),
            },
        }


class PartialMaskUndecided(Exception):
    """The top rows of a mask hold only 0 and 255: only the whole mask tells whether it is a 0/255 mask."""


class MaskTopRows:
    """A sample's mask, decoded, mapped and checked (`BaseSegDataset.checked_mask`) only as far down as asked.

    `reader(n)` gives at least the first n rows: the first call decodes n rows, a later call that needs more
    (a `cat_max_ratio` re-draw) the whole mask. The label check covers the decoded rows only (rows never decoded
    are never trained on); a top part of only 0 and 255 is decoded whole, so that 0/255 masks are refused.
    """

    def __init__(self, dataset: BaseSegDataset, reader: PngTopRows) -> None:
        self.dataset, self.reader = dataset, reader
        self.shape, self.placeholder = reader.shape, reader.placeholder
        self.decoded: np.ndarray | None = None
        self.first_rows = 0  # the rows the first call asked for (tests, the benchmark)

    def __call__(self, rows: int) -> np.ndarray:
        height = self.shape[0]
        if self.decoded is None or self.decoded.shape[0] < min(rows, height):
            if self.decoded is None:
                self.first_rows = rows
            else:
                rows = height
            path = self.reader.path
            try:
                self.decoded = self.dataset.checked_mask(self.reader(rows), path, top=rows < height)
            except PartialMaskUndecided:
                self.decoded = self.dataset.checked_mask(self.reader(height), path)
        return self.decoded

    @property
    def rows_decoded(self) -> int:
        return 0 if self.decoded is None else self.decoded.shape[0]


def binary_255_message(path: Path | str, num_classes: int) -> str:
    """Why a 0/255 mask is refused, and the two ways on (the loader's and check_dataset.py's message)."""
    return (
        f"Mask '{path}' holds only the values 0 and 255, but the dataset has {num_classes} classes and 255 is "
        "the ignore index: its foreground would be ignored, not learned (binary masks saved as 0/255). "
        "Map 255 to class 1: `+dataset.label_map={255:1}` on the command line (or `label_map: {255: 1}` in "
        "the dataset config); for a one-logit sigmoid model see experiment=binary_drive. "
        "If 255 really is the ignore label here, say so with label_map={255: 255}."
    )


def default_palette(n: int) -> list[list[int]]:
    """n well-separated colours (golden-ratio hues), deterministic, for datasets that declare none."""
    out = []
    for i in range(n):
        r, g, b = colorsys.hsv_to_rgb((i * 0.618033988749895) % 1.0, 0.65, 0.95)
        out.append([int(r * 255), int(g * 255), int(b * 255)])
    return out


def seg_collate(samples: Sequence[dict[str, Any]]) -> dict[str, list]:
    """Keep images and masks as lists: sizes may differ; the data preprocessor pads and stacks them."""
    return {key: [s[key] for s in samples] for key in ("inputs", "masks", "metas")}
