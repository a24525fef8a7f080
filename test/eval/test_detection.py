"""Detection figures: AP at IoU 0.5, recall and precision at a score threshold."""

import pytest
import torch

from pose6d_ros.eval.detection import ImageDetections, detection_metrics, match

GT_BOXES = torch.tensor([[0.0, 0, 10, 10], [20, 20, 40, 40], [50, 0, 60, 30]])
GT_LABELS = torch.tensor([1, 2, 1])


def _image(boxes, labels, scores) -> ImageDetections:
    return ImageDetections(torch.tensor(boxes, dtype=torch.float32).reshape(-1, 4),
                           torch.tensor(labels), torch.tensor(scores, dtype=torch.float32),
                           GT_BOXES, GT_LABELS)


def test_perfect_detections_score_one():
    im = _image(GT_BOXES.tolist(), GT_LABELS.tolist(), [0.9, 0.8, 0.7])
    assert match(im).tolist() == [True, True, True]
    assert detection_metrics([im]) == {"ap50": 1.0, "recall": 1.0, "precision": 1.0,
                                       "targets": 3.0}


def test_wrong_class_duplicate_and_low_score_detections():
    im = _image([[0, 0, 10, 10], [0, 0, 10, 11], [20, 20, 40, 40], [50, 0, 60, 30]],
                [1, 1, 1, 1], [0.9, 0.8, 0.95, 0.3])
    # The duplicate of a matched box and the box of the wrong class are false positives.
    assert match(im).tolist() == [True, False, False, True]
    m = detection_metrics([im], score_threshold=0.5)
    assert m["recall"] == pytest.approx(1 / 3) and m["precision"] == pytest.approx(1 / 3)
    # Class 1: hits at ranks 2 and 4 of its 4 detections (precision 1/2, 1/2); class 2: none.
    assert m["ap50"] == pytest.approx((0.5 * 0.5 + 0.5 * 0.5 + 0.0) / 2)


def test_no_detections_and_no_images():
    assert detection_metrics([_image([], [], [])])["recall"] == 0.0
    assert detection_metrics([])["ap50"] == 0.0
