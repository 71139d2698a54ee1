"""sagepose.geometry: box checks and MPII's head size, on analytic cases."""
from __future__ import annotations

import numpy as np
import pytest

from sagepose.geometry import BOX_EMPTY, BOX_NONFINITE, BOX_OUTSIDE, check_boxes, mpii_head_size


def test_check_boxes_names_each_problem_on_analytic_boxes():
    boxes = [[10, 10, 50, 60], [np.nan, 0, 5, 5], [50, 10, 10, 60], [10, 10, 10, 60], [200, 10, 220, 30],
             [-20, -20, 5, 5]]
    xyxy, problems = check_boxes(boxes, (160, 120), strict=False)
    assert list(problems) == ["", BOX_NONFINITE, BOX_EMPTY, BOX_EMPTY, BOX_OUTSIDE, ""]  # the last overlaps
    xyxy, problems = check_boxes([[10, 10, 40, 50]], (160, 120), fmt="xywh")
    np.testing.assert_array_equal(xyxy, [[10, 10, 50, 60]])
    assert list(problems) == [""]


def test_mpii_head_size_is_0_6_of_the_head_box_diagonal():
    boxes = np.array([[[10.0, 20.0], [40.0, 60.0]], [[0.0, 0.0], [6.0, 8.0]]])  # diagonals 50 and 10
    np.testing.assert_allclose(mpii_head_size(boxes), [30.0, 6.0])
    np.testing.assert_allclose(mpii_head_size(boxes.reshape(2, 4)), [30.0, 6.0])
    with pytest.raises(ValueError, match="mpii_head_size"):
        mpii_head_size(np.ones((2, 3)))
