"""Connected-component statistics per class, on masks drawn by hand so that the answer is known."""

from __future__ import annotations

import math

import numpy as np
import pytest

from src.serve.connected_components import ComponentStats, component_areas


def _mask() -> np.ndarray:
    m = np.zeros((12, 12), dtype=np.uint8)
    m[1:3, 1:3] = 1  # 2x2 = 4 px
    m[5:8, 5:8] = 1  # 3x3 = 9 px
    m[3, 3] = 1  # touches the first square only diagonally: joins it with 8-connectivity
    m[9:11, 0:12] = 2  # a 2x12 band...
    m[9:11, 6] = 255  # ...cut in two by ignored pixels: 2x6 and 2x5
    return m


def test_component_areas_count_objects_per_class():
    areas = component_areas(_mask(), num_classes=3, connectivity=8)
    assert sorted(areas[1].tolist()) == [5, 9]
    assert sorted(areas[2].tolist()) == [10, 12]
    # the band splits the background in two: rows 0-8 and row 11
    assert sorted(areas[0].tolist()) == [12, 144 - 14 - 22 - 2 - 12]
    four = component_areas(_mask(), num_classes=3, connectivity=4)
    assert sorted(four[1].tolist()) == [1, 4, 9]


def test_absent_class_has_no_component_and_bad_input_is_an_error():
    assert component_areas(np.zeros((4, 4), np.uint8), 2)[1].size == 0
    with pytest.raises(ValueError, match="connectivity=6"):
        component_areas(np.zeros((4, 4), np.uint8), 2, connectivity=6)
    with pytest.raises(ValueError, match=r"shape \(4, 4, 3\)"):
        component_areas(np.zeros((4, 4, 3), np.uint8), 2)


def test_component_stats_accumulate_over_images():
    stats = ComponentStats(["background", "square", "band"], min_area=5)
    stats.update(_mask())
    other = np.zeros((12, 12), dtype=np.uint8)
    other[0:5, 0:5] = 1  # 25 px
    stats.update(other)
    rows = {r["class"]: r for r in stats.table()}
    # squares of 5, 9 and 25 px, all kept by min_area=5
    assert rows["square"]["count"] == 3 and rows["square"]["per_image"] == 1.5
    assert (rows["square"]["area_min"], rows["square"]["area_max"]) == (5.0, 25.0)
    assert rows["square"]["area_mean"] == pytest.approx((5 + 9 + 25) / 3)
    assert rows["band"]["count"] == 2 and rows["band"]["area_mean"] == 11.0
    strict = ComponentStats(["background", "square", "band"], min_area=6)
    strict.update(_mask())
    assert strict.table()[1]["count"] == 1  # the 5 px component is speckle for min_area=6
    empty = ComponentStats(["a", "b"])
    empty.update(np.zeros((3, 3), np.uint8))
    row_b = empty.table()[1]
    assert row_b["count"] == 0 and math.isnan(row_b["area_mean"])
