"""The entropy (KL) calibration's threshold search: edgeseg's prefix-sum version against ONNX Runtime's own
``HistogramCollector.get_entropy_threshold`` (a performance audit: its Python ``sum`` over numpy slices, quadratic in
the bins, was 11.5 s of a 200-frame calibration of ``road``). The same thresholds, bit for bit."""
from __future__ import annotations

import numpy as np
import pytest

pytest.importorskip("onnxruntime")


def _ort_threshold(histogram, bins=128):
    from onnxruntime.quantization.calibrate import HistogramCollector

    collector = HistogramCollector(method="entropy", symmetric=False, num_bins=512, num_quantized_bins=bins,
                                   percentile=99.999, scenario="same")
    return collector.get_entropy_threshold(histogram, bins)


@pytest.mark.parametrize("bins", [512, 634, 1312])
def test_the_search_gives_onnx_runtimes_thresholds(bins):
    from edgeseg.quant.ranges import entropy_threshold

    rng = np.random.default_rng(bins)
    for case in range(6):
        values = rng.standard_normal(20_000).astype(np.float32) * (1 + case)
        if case % 2:  # ReLU outputs: a spike at zero, empty bins below it
            values = np.maximum(values, 0)
        if case == 5:  # sparse: most bins empty
            values = rng.choice([-3.0, 0.0, 0.5, 7.0], 5_000).astype(np.float32)
        edge = float(np.abs(values).max()) or 1.0
        hist, edges = np.histogram(values, bins, range=(-edge, edge))
        histogram = (hist, edges.astype(np.float32), values.min(), values.max())
        got, want = entropy_threshold(histogram, 128), _ort_threshold(histogram)
        assert got[0] == want[0] and got[1] == want[1] and got[0].dtype == want[0].dtype, (bins, case, got, want)


def test_a_calibration_on_frames_gives_the_same_ranges_as_onnx_runtimes_search(tmp_path):
    """The whole entropy calibration of a small model on real-looking frames, ONNX Runtime's search against ours."""
    from edgeseg.quant import ranges
    from handmade_bundles import conv_bundle

    from onnxruntime.quantization.calibrate import CalibrationMethod, create_calibrator

    bundle = conv_bundle(tmp_path / "b")
    rng = np.random.default_rng(3)
    feeds = [{"images": rng.standard_normal((1, 3, 8, 12)).astype(np.float32)} for _ in range(6)]
    model = bundle.model_path("fp32")

    def thresholds(ours: bool) -> dict:
        cal = create_calibrator(str(model), None, augmented_model_path=str(tmp_path / f"aug{int(ours)}.onnx"),
                                calibrate_method=CalibrationMethod.Entropy,
                                extra_options={"symmetric": False, "num_bins": 512, "num_quantized_bins": 128})
        it = iter(feeds)
        cal.collect_data(type("R", (), {"get_next": lambda self: next(it, None)})())
        if ours:
            cal.collector.get_entropy_threshold = lambda h, b: ranges.entropy_threshold(h, b)
        return {k: tuple(map(float, v.range_value)) for k, v in cal.compute_data().items()}

    assert thresholds(True) == thresholds(False)
