import numpy as np
import pytest
from sklearn.metrics import confusion_matrix as sk_confusion
from sklearn.metrics import precision_recall_fscore_support

from axion_ray.metrics.classification import classification_metrics, confusion_matrix


def test_agrees_with_scikit_learn():
    rng = np.random.default_rng(0)
    y_true = rng.integers(0, 3, 200)
    y_pred = np.where(rng.random(200) < 0.7, y_true, rng.integers(0, 3, 200))
    m = classification_metrics(y_true, y_pred, ["clean", "pit", "maybe"])
    p, r, f, s = precision_recall_fscore_support(y_true, y_pred, labels=[0, 1, 2], zero_division=0)
    for i, name in enumerate(["clean", "pit", "maybe"]):
        assert m["per_class"][name]["precision"] == pytest.approx(p[i])
        assert m["per_class"][name]["recall"] == pytest.approx(r[i])
        assert m["per_class"][name]["f1"] == pytest.approx(f[i])
        assert m["per_class"][name]["support"] == s[i]
    assert m["confusion_matrix"] == sk_confusion(y_true, y_pred, labels=[0, 1, 2]).tolist()
    assert m["accuracy"] == pytest.approx(np.mean(y_true == y_pred))
    assert m["pit_recall"] == pytest.approx(r[1])


def test_class_never_predicted_has_zero_precision():
    m = classification_metrics([0, 1, 1], [0, 0, 0], ["clean", "pit"])
    assert m["per_class"]["pit"] == {"precision": 0.0, "recall": 0.0, "f1": 0.0, "support": 2}


def test_labels_out_of_range_are_errors():
    with pytest.raises(ValueError, match="0..1"):
        confusion_matrix([0, 2], [0, 1], 2)
