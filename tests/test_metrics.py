"""Tests for src.metrics.SegMetrics against an independent NumPy reference and hand-made cases."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from src.metrics import PER_CLASS_KEYS, SCALAR_KEYS, SegMetrics

IGNORE = 255


# --------------------------------------------------------------------------- reference
def reference_metrics(pairs, num_classes, ignore_index=IGNORE, beta=1.0):
    """MMSeg's intersect_and_union / total_area_to_metrics, written with explicit per-class counting."""
    inter = np.zeros(num_classes, dtype=np.float64)
    area_pred = np.zeros(num_classes, dtype=np.float64)
    area_label = np.zeros(num_classes, dtype=np.float64)
    for pred, label in pairs:
        pred = np.asarray(pred).ravel()
        label = np.asarray(label).ravel()
        mask = label != ignore_index
        pred, label = pred[mask], label[mask]
        for c in range(num_classes):
            inter[c] += np.count_nonzero((pred == c) & (label == c))
            area_pred[c] += np.count_nonzero(pred == c)
            area_label[c] += np.count_nonzero(label == c)
    union = area_pred + area_label - inter

    def ratio(num, den):
        return np.array([n / d if d != 0 else np.nan for n, d in zip(num, den)])

    precision = ratio(inter, area_pred)
    recall = ratio(inter, area_label)
    fscore = []
    for p, r in zip(precision, recall):
        den = beta**2 * p + r
        fscore.append(np.nan if (np.isnan(den) or den == 0) else (1 + beta**2) * p * r / den)
    out = {
        "IoU": ratio(inter, union),
        "Acc": recall,
        "Dice": ratio(2 * inter, area_pred + area_label),
        "Fscore": np.array(fscore),
        "Precision": precision,
        "Recall": recall,
    }
    out["aAcc"] = inter.sum() / area_label.sum()
    for k in PER_CLASS_KEYS:
        vals = [v for v in out[k] if not np.isnan(v)]
        out["m" + k] = float(np.mean(vals)) if vals else np.nan
    return out


def assert_matches(results, expected, rtol=1e-6, atol=1e-7):
    assert set(results) == set(PER_CLASS_KEYS) | set(SCALAR_KEYS)
    for k in PER_CLASS_KEYS + SCALAR_KEYS:
        np.testing.assert_allclose(
            results[k].cpu().double().numpy(), expected[k], rtol=rtol, atol=atol, equal_nan=True, err_msg=k
        )


def random_batch(rng, n, h, w, num_classes, pred_classes, label_classes, ignore_frac=0.15):
    pred = rng.choice(pred_classes, size=(n, h, w))
    label = rng.choice(label_classes, size=(n, h, w))
    # Make predictions correlated with labels so IoUs are not all tiny.
    agree = rng.random((n, h, w)) < 0.5
    pred = np.where(agree & np.isin(label, pred_classes), label, pred)
    label = np.where(rng.random((n, h, w)) < ignore_frac, IGNORE, label)
    return pred, label


# --------------------------------------------------------------------------- vs reference
@pytest.mark.parametrize("seed", [0, 1, 2])
@pytest.mark.parametrize("beta", [1.0, 0.5, 2.0])
def test_matches_numpy_reference_accumulated(seed, beta):
    rng = np.random.default_rng(seed)
    c = 7
    # class 5: predicted only; class 6: absent everywhere; class 4: labelled only.
    pred_classes = [0, 1, 2, 3, 5]
    label_classes = [0, 1, 2, 3, 4]
    metric = SegMetrics(num_classes=c, ignore_index=IGNORE, beta=beta)
    pairs = []
    for n, h, w in [(2, 17, 23), (1, 8, 8), (3, 5, 31)]:
        pred, label = random_batch(rng, n, h, w, c, pred_classes, label_classes)
        # Out-of-range predictions on ignored pixels must be harmless.
        pred = np.where(label == IGNORE, rng.choice([0, 6, 200], size=pred.shape), pred)
        pairs.append((pred, label))
        metric.update(torch.from_numpy(pred), torch.from_numpy(label).to(torch.uint8))
    # One more [H, W] update.
    pred, label = random_batch(rng, 1, 9, 11, c, pred_classes, label_classes)
    pairs.append((pred[0], label[0]))
    metric.update(torch.from_numpy(pred[0]), torch.from_numpy(label[0]))

    results = metric.compute()
    expected = reference_metrics(pairs, c, beta=beta)
    assert_matches(results, expected)
    # Sanity on the structure of the random case.
    assert np.isnan(expected["IoU"][6]) and expected["IoU"][5] == 0 and np.isnan(expected["Acc"][5])
    for k in PER_CLASS_KEYS:
        assert results[k].shape == (c,) and results[k].dtype == torch.float32
    for k in SCALAR_KEYS:
        assert results[k].shape == () and results[k].dtype == torch.float32


def test_confmat_rows_are_labels_cols_are_predictions():
    metric = SegMetrics(num_classes=3)
    metric.update(torch.tensor([[1, 2, 2]]), torch.tensor([[0, 0, 1]]))
    expected = torch.tensor([[0, 1, 1], [0, 0, 1], [0, 0, 0]])
    assert torch.equal(metric.confmat, expected)
    assert metric.confmat.dtype == torch.long


# --------------------------------------------------------------------------- hand-made
def test_hand_made_3x3_absent_class_is_nan_and_excluded_from_means():
    # Class 2 appears nowhere (only as a prediction on an ignored pixel).
    target = torch.tensor([[0, 0, 0], [0, 1, 1], [1, 1, IGNORE]])
    preds = torch.tensor([[0, 0, 1], [1, 1, 1], [0, 1, 2]])
    # Confusion matrix (rows label, cols pred): [[2, 2, 0], [1, 3, 0], [0, 0, 0]]
    # I = [2, 3, 0], P = [3, 5, 0], L = [4, 4, 0], U = [5, 6, 0]
    metric = SegMetrics(num_classes=3)
    metric.update(preds, target)
    r = {k: v.double().numpy() for k, v in metric.compute().items()}
    nan = np.nan
    exp = {
        "IoU": [2 / 5, 3 / 6, nan],
        "Acc": [2 / 4, 3 / 4, nan],
        "Recall": [2 / 4, 3 / 4, nan],
        "Precision": [2 / 3, 3 / 5, nan],
        "Dice": [4 / 7, 6 / 9, nan],
        "Fscore": [4 / 7, 2 / 3, nan],  # beta=1: F1 == Dice
        "aAcc": 5 / 8,
        "mIoU": (2 / 5 + 1 / 2) / 2,  # 0.45
        "mAcc": (1 / 2 + 3 / 4) / 2,  # 0.625
        "mRecall": 0.625,
        "mPrecision": (2 / 3 + 3 / 5) / 2,  # 19/30
        "mDice": 13 / 21,
        "mFscore": 13 / 21,
    }
    for k, v in exp.items():
        np.testing.assert_allclose(r[k], v, rtol=1e-6, equal_nan=True, err_msg=k)
    assert math.isclose(float(r["mIoU"]), 0.45, rel_tol=1e-6)

    # F-beta with beta=2 on the same data: (1+4) P R / (4 P + R)
    metric2 = SegMetrics(num_classes=3, beta=2.0)
    metric2.update(preds, target)
    r2 = metric2.compute()
    np.testing.assert_allclose(
        r2["Fscore"].double().numpy(), [10 / 19, 5 / 7, nan], rtol=1e-6, equal_nan=True
    )
    np.testing.assert_allclose(float(r2["mFscore"]), (10 / 19 + 5 / 7) / 2, rtol=1e-6)


def test_predicted_but_unlabelled_class_has_zero_iou_and_nan_acc():
    target = torch.tensor([[0, 0, 1, 1]])
    preds = torch.tensor([[0, 2, 1, 2]])  # class 2 predicted twice, never labelled
    metric = SegMetrics(num_classes=3)
    metric.update(preds, target)
    r = metric.compute()
    assert r["IoU"][2].item() == 0.0
    assert r["Dice"][2].item() == 0.0
    assert r["Precision"][2].item() == 0.0
    assert math.isnan(r["Acc"][2].item())
    assert math.isnan(r["Recall"][2].item())
    assert math.isnan(r["Fscore"][2].item())
    # mIoU counts the 0: (1/2 + 1/2 + 0) / 3; mAcc excludes the NaN: (1/2 + 1/2) / 2
    np.testing.assert_allclose(float(r["mIoU"]), 1 / 3, rtol=1e-6)
    np.testing.assert_allclose(float(r["mAcc"]), 1 / 2, rtol=1e-6)
    np.testing.assert_allclose(float(r["aAcc"]), 2 / 4, rtol=1e-6)


def test_labelled_but_unpredicted_class_and_zero_overlap_fscore_quirk():
    target = torch.tensor([[0, 1, 2, 2]])
    preds = torch.tensor([[1, 0, 0, 1]])  # nothing right; class 2 never predicted
    metric = SegMetrics(num_classes=3)
    metric.update(preds, target)
    r = metric.compute()
    assert r["IoU"].tolist() == [0.0, 0.0, 0.0]
    assert r["Acc"].tolist() == [0.0, 0.0, 0.0]
    assert r["Dice"].tolist() == [0.0, 0.0, 0.0]
    assert r["Precision"][:2].tolist() == [0.0, 0.0] and math.isnan(r["Precision"][2].item())
    # MMSeg: Fscore = (1+b^2) P R / (b^2 P + R) = 0/0 = NaN when P = R = 0.
    assert torch.isnan(r["Fscore"]).all()
    assert math.isnan(float(r["mFscore"]))
    assert float(r["aAcc"]) == 0.0


def test_empty_metric_is_all_nan():
    metric = SegMetrics(num_classes=2)
    metric.update(torch.zeros(1, 2, 2, dtype=torch.long), torch.full((1, 2, 2), IGNORE))
    s = metric.summary()
    assert all(math.isnan(v) for v in s.values())


# --------------------------------------------------------------------------- ignore / logits
def test_ignored_pixels_do_not_count_whatever_the_prediction():
    rng = np.random.default_rng(3)
    pred, label = random_batch(rng, 2, 16, 16, 4, [0, 1, 2, 3], [0, 1, 2, 3], ignore_frac=0.3)
    ignored = label == IGNORE
    assert ignored.any()
    other_pred = np.where(ignored, rng.integers(0, 4, size=pred.shape), pred)
    wild_pred = np.where(ignored, 999, pred)  # out of range only on ignored pixels: no error

    confmats = []
    for p in (pred, other_pred, wild_pred):
        m = SegMetrics(num_classes=4)
        m.update(torch.from_numpy(p), torch.from_numpy(label))
        confmats.append(m.confmat.clone())
    assert torch.equal(confmats[0], confmats[1]) and torch.equal(confmats[0], confmats[2])
    assert int(confmats[0].sum()) == int((~ignored).sum())


def test_custom_ignore_index():
    target = torch.tensor([[-1, 0, 1, -1]])
    preds = torch.tensor([[1, 0, 1, 0]])
    metric = SegMetrics(num_classes=2, ignore_index=-1)
    metric.update(preds, target)
    assert torch.equal(metric.confmat, torch.tensor([[1, 0], [0, 1]]))
    assert float(metric.compute()["mIoU"]) == 1.0


def test_logits_equal_argmax_indices():
    g = torch.Generator().manual_seed(0)
    c = 5
    logits = torch.randn(3, c, 12, 10, generator=g)
    target = torch.randint(0, c, (3, 12, 10), generator=g)
    target[:, :2] = IGNORE
    a, b = SegMetrics(num_classes=c), SegMetrics(num_classes=c)
    a.update(logits, target)
    b.update(logits.argmax(dim=1), target)
    assert torch.equal(a.confmat, b.confmat)
    ra, rb = a.compute(), b.compute()
    for k in ra:
        torch.testing.assert_close(ra[k], rb[k], equal_nan=True)

    # Unbatched logits [C, H, W] with target [H, W].
    s1, s2 = SegMetrics(num_classes=c), SegMetrics(num_classes=c)
    s1.update(logits[0], target[0])
    s2.update(logits[0].argmax(dim=0), target[0])
    assert torch.equal(s1.confmat, s2.confmat)


def test_forward_returns_batch_value_and_accumulates():
    metric = SegMetrics(num_classes=2)
    t1 = torch.tensor([[0, 0, 1, 1]])
    batch = metric(torch.tensor([[0, 0, 1, 1]]), t1)
    assert float(batch["mIoU"]) == 1.0
    batch = metric(torch.tensor([[1, 1, 0, 0]]), t1)
    assert float(batch["mIoU"]) == 0.0
    assert float(metric.compute()["aAcc"]) == 0.5


def test_state_is_additive_like_ddp_sum():
    rng = np.random.default_rng(7)
    pred, label = random_batch(rng, 4, 8, 8, 3, [0, 1, 2], [0, 1, 2])
    whole, part1, part2 = SegMetrics(3), SegMetrics(3), SegMetrics(3)
    whole.update(torch.from_numpy(pred), torch.from_numpy(label))
    part1.update(torch.from_numpy(pred[:2]), torch.from_numpy(label[:2]))
    part2.update(torch.from_numpy(pred[2:]), torch.from_numpy(label[2:]))
    assert torch.equal(part1.confmat + part2.confmat, whole.confmat)
    if hasattr(part1, "merge_state"):
        part1.merge_state(part2)
        assert torch.equal(part1.confmat, whole.confmat)


# --------------------------------------------------------------------------- reset / errors
def test_reset_clears_state():
    metric = SegMetrics(num_classes=3)
    metric.update(torch.tensor([[0, 1, 2]]), torch.tensor([[0, 1, 1]]))
    assert int(metric.confmat.sum()) == 3
    metric.reset()
    assert int(metric.confmat.sum()) == 0 and metric.confmat.shape == (3, 3)
    metric.update(torch.tensor([[2]]), torch.tensor([[2]]))
    r = metric.compute()
    assert float(r["aAcc"]) == 1.0 and float(r["mIoU"]) == 1.0


def test_shape_mismatch_raises_with_both_shapes():
    metric = SegMetrics(num_classes=3)
    with pytest.raises(ValueError) as exc:
        metric.update(torch.zeros(2, 4, 4, dtype=torch.long), torch.zeros(2, 4, 5, dtype=torch.long))
    assert "(2, 4, 4)" in str(exc.value) and "(2, 4, 5)" in str(exc.value)

    with pytest.raises(ValueError) as exc:
        metric.update(torch.randn(2, 3, 4, 4), torch.zeros(2, 4, 5, dtype=torch.long))
    assert "(2, 3, 4, 4)" in str(exc.value) and "(2, 4, 5)" in str(exc.value)

    with pytest.raises(ValueError, match="channels") as exc:
        metric.update(torch.randn(2, 5, 4, 4), torch.zeros(2, 4, 4, dtype=torch.long))
    assert "num_classes is 3" in str(exc.value)
    assert int(metric.confmat.sum()) == 0


def test_out_of_range_label_raises_naming_values():
    metric = SegMetrics(num_classes=5)
    target = torch.tensor([[0, 7, 4, IGNORE], [-3, 7, 1, 2]])
    preds = torch.zeros_like(target)
    with pytest.raises(ValueError) as exc:
        metric.update(preds, target)
    msg = str(exc.value)
    assert "[-3, 7]" in msg and "3 pixels" in msg
    assert "ignore_index=255" in msg and "[0, 5)" in msg
    assert int(metric.confmat.sum()) == 0  # nothing was accumulated


def test_out_of_range_prediction_raises_naming_values():
    metric = SegMetrics(num_classes=3)
    with pytest.raises(ValueError) as exc:
        metric.update(torch.tensor([[0, 3, 9, 1]]), torch.tensor([[0, 1, 2, 2]]))
    assert "preds" in str(exc.value) and "[3, 9]" in str(exc.value)


def test_validation_off_drops_out_of_range_pixels_silently():
    metric = SegMetrics(num_classes=3, validate_labels=False)
    metric.update(torch.tensor([[0, 1, 5, 1]]), torch.tensor([[0, 9, 2, 1]]))
    assert torch.equal(metric.confmat, torch.tensor([[1, 0, 0], [0, 1, 0], [0, 0, 0]]))


def test_bad_dtypes_and_args():
    metric = SegMetrics(num_classes=3)
    with pytest.raises(TypeError, match="target"):
        metric.update(torch.zeros(1, 2, 2, dtype=torch.long), torch.zeros(1, 2, 2))
    with pytest.raises(TypeError, match="preds"):
        metric.update(torch.zeros(1, 2, 2), torch.zeros(1, 2, 2, dtype=torch.long))
    with pytest.raises(ValueError, match="class_names"):
        SegMetrics(num_classes=3, class_names=["a", "b"])
    with pytest.raises(ValueError, match="num_classes"):
        SegMetrics(num_classes=0)


# --------------------------------------------------------------------------- table / summary
def test_per_class_table_and_summary_are_python_floats_with_names():
    metric = SegMetrics(num_classes=3, class_names=["road", "car", "sky"])
    metric.update(torch.tensor([[0, 0, 1, 1]]), torch.tensor([[0, 1, 1, 1]]))
    results = metric.compute()
    rows = metric.per_class_table(results)
    assert [r["class"] for r in rows] == ["road", "car", "sky"]
    for row in rows:
        assert set(row) == {"class", *PER_CLASS_KEYS}
        assert all(type(row[k]) is float for k in PER_CLASS_KEYS)
    assert math.isclose(rows[0]["IoU"], 1 / 2, rel_tol=1e-6)
    assert math.isclose(rows[1]["IoU"], 2 / 3, rel_tol=1e-6)
    assert math.isnan(rows[2]["IoU"])

    summary = metric.summary(results)
    assert list(summary) == list(SCALAR_KEYS)
    assert all(type(v) is float for v in summary.values())
    assert math.isclose(summary["mIoU"], (1 / 2 + 2 / 3) / 2, rel_tol=1e-6)
    assert math.isclose(summary["aAcc"], 3 / 4, rel_tol=1e-6)

    # Defaults: compute() is called, class names are the indices.
    default = SegMetrics(num_classes=2)
    default.update(torch.tensor([[0, 1]]), torch.tensor([[0, 1]]))
    assert [r["class"] for r in default.per_class_table()] == ["0", "1"]
    assert default.summary()["mIoU"] == 1.0
