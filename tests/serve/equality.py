"""``assert_results_equal(got, want)``: a result that crossed the wire equals the local one, array by
array (values and dtypes), for every task edgeseg serve answers."""
from __future__ import annotations

import numpy as np

from edgeseg.structures import InstanceResult, PanopticResult, SemanticResult


def _arrays_equal(got, want, names) -> None:
    for name in names:
        g, w = getattr(got, name), getattr(want, name)
        assert (g is None) == (w is None), name
        if w is not None:
            assert g.dtype == w.dtype, (name, g.dtype, w.dtype)
            np.testing.assert_array_equal(g, w, err_msg=name)


def _semantic(got: SemanticResult, want: SemanticResult) -> None:
    assert got.classes == want.classes
    _arrays_equal(got, want, ("labels", "confidence"))


def _instance(got: InstanceResult, want: InstanceResult) -> None:
    assert (got.image_shape, got.class_names, got.is_compact, got.has_masks, len(got)) == \
        (want.image_shape, want.class_names, want.is_compact, want.has_masks, len(want))
    _arrays_equal(got, want, ("boxes", "scores", "classes", "track_ids", "mask_boxes"))
    if want.mask_crops is not None:
        for g, w in zip(got.mask_crops, want.mask_crops, strict=True):
            np.testing.assert_array_equal(g, w)
    _arrays_equal(got, want, ("masks",))  # materialises both


def _panoptic(got: PanopticResult, want: PanopticResult) -> None:
    assert (got.segments, got.class_names, got.category_ids) == (want.segments, want.class_names, want.category_ids)
    _arrays_equal(got, want, ("segment_ids",))


_CHECKS = {SemanticResult: _semantic, InstanceResult: _instance, PanopticResult: _panoptic}


def assert_results_equal(got, want) -> None:
    assert type(got) is type(want), (type(got).__name__, type(want).__name__)
    _CHECKS[type(want)](got, want)
