"""The output video keeps the source's frame rate; the source opens (and fails) before the model loads."""
from __future__ import annotations

import time

import numpy as np
import pytest

from edgeseg.errors import InputError
from edgeseg.stream import InferenceStage, OpenCVSource, Pipeline, PreprocessStage, StreamOptions
from edgeseg.stream.api import build_pipeline
from stream_helpers import decode_mp4_frames, make_images


def write_clip(path, fps: float, n: int = 12):
    import cv2

    w = cv2.VideoWriter(str(path), cv2.VideoWriter_fourcc(*"mp4v"), fps, (64, 48))
    assert w.isOpened()
    for img in make_images(n, (48, 64), seed=3):
        w.write(np.ascontiguousarray(img[..., ::-1]))
    w.release()
    return path


def video_fps(path) -> float:
    import cv2

    cap = cv2.VideoCapture(str(path))
    fps = cap.get(cv2.CAP_PROP_FPS)
    cap.release()
    return fps


def _run_to_mp4(clip, out, predictor, source_backend: str) -> None:
    opts = StreamOptions(source=str(clip), sink=str(out), source_backend=source_backend, log_interval_s=0)
    build_pipeline(opts, predictor=predictor, handle_signals=False).run()


def test_mp4_keeps_a_30fps_file_rate_opencv(tmp_path, predictor):
    clip = write_clip(tmp_path / "clip30.mp4", 30.0)
    out = tmp_path / "out.mp4"
    _run_to_mp4(clip, out, predictor, "opencv")
    assert video_fps(out) == pytest.approx(30.0, abs=0.01)  # was 25: fps read before the source opened
    assert len(decode_mp4_frames(out)) == 12


def test_mp4_keeps_a_30fps_file_rate_gstreamer(gst, tmp_path, predictor):
    clip = write_clip(tmp_path / "clip30.mp4", 30.0)
    out = tmp_path / "out.mp4"
    _run_to_mp4(clip, out, predictor, "gstreamer")
    assert video_fps(out) == pytest.approx(30.0, abs=0.01)
    assert len(decode_mp4_frames(out)) == 12


def test_test_pattern_fps_option_sets_the_source_rate(gst, tmp_path, predictor):
    from edgeseg.stream import GstSource

    assert GstSource("test://ball?fps=15&frames=3").fps == 15.0
    assert GstSource("test://ball?frames=3").fps == 30.0  # the launch string's default caps
    out = tmp_path / "t.mp4"
    opts = StreamOptions(source="test://ball?fps=15&frames=6&width=64&height=48", sink=str(out), log_interval_s=0)
    build_pipeline(opts, predictor=predictor, handle_signals=False).run()
    assert video_fps(out) == pytest.approx(15.0, abs=0.01) and len(decode_mp4_frames(out)) == 6


def test_explicit_fps_wins_over_the_source(tmp_path, predictor):
    clip = write_clip(tmp_path / "clip30.mp4", 30.0, n=4)
    out = tmp_path / "out.mp4"
    opts = StreamOptions(source=str(clip), sink=str(out), source_backend="opencv", fps=10, log_interval_s=0)
    build_pipeline(opts, predictor=predictor, handle_signals=False).run()
    assert video_fps(out) == pytest.approx(10.0, abs=0.01)


def test_missing_file_fails_before_the_runner_is_activated(bundle, tmp_path):
    import edgeseg

    p = edgeseg.load(bundle, backend="onnxruntime", threads=1)  # lazy: not active
    pipe = Pipeline([OpenCVSource(str(tmp_path / "missing.mp4")), PreprocessStage(p.preprocess),
                     InferenceStage(p.runner)], handle_signals=False, log_interval_s=0)
    t0 = time.perf_counter()
    with pytest.raises(InputError, match="missing.mp4"):
        pipe.run()
    elapsed = time.perf_counter() - t0
    assert not p.runner.is_active and np.isnan(p.runner.last_latency_s)  # never activated, never warmed up
    assert elapsed < 2.0


def test_build_pipeline_checks_the_source_before_the_bundle(tmp_path):
    # the bundle does not exist either: the source is the error reported, without opening any bundle
    opts = StreamOptions(source=str(tmp_path / "missing.mp4"), bundle=str(tmp_path / "nope.edgeseg"),
                         source_backend="opencv")
    with pytest.raises(InputError, match="missing.mp4"):
        build_pipeline(opts, handle_signals=False).run()
