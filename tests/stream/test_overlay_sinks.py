"""Overlay rendering and result sinks, checked against hand-computed pixels and decoded files."""
from __future__ import annotations

import json

import cv2
import numpy as np
import pytest

from edgeseg.stream import JsonLinesSink, LabelPngSink, Packet, Renderer
from edgeseg.stream.overlay import blend, render_instance, render_panoptic, render_semantic
from edgeseg.stream.sinks import frame_record, label_image
from edgeseg.structures import (Frame, ImageShape, InstanceResult, PanopticResult, Segment, SemanticResult,
                                rle_decode)

PALETTE = np.array([[0, 0, 0], [255, 0, 0], [0, 200, 0], [0, 0, 100]], np.uint8)


def test_semantic_blend_matches_the_formula():
    img = np.full((4, 6, 3), 100, np.uint8)
    labels = np.array([[0, 1, 2, 3, 1, 1]] * 4, np.uint8)
    out = render_semantic(img, SemanticResult(labels), palette=PALETTE, alpha=0.25)
    want = np.round(0.75 * 100 + 0.25 * PALETTE[labels].astype(np.float64)).astype(np.uint8)
    np.testing.assert_array_equal(out, want)
    assert out[0, 1].tolist() == [139, 75, 75]  # 0.75 * 100 + 0.25 * 255 = 138.75


def test_a_large_photos_colours_are_looked_up_in_bands(monkeypatch):
    """A batch audit: an 8000x8000 photo's overlay took 733 MB above its labels (the colour lookup cast every label
    to an 8-byte index at once). Past LOOKUP_BAND_PIXELS it goes band by band: the same colours, the formula's blend."""
    from edgeseg.structures import palette

    labels = np.random.default_rng(1).integers(0, 4, (37, 23)).astype(np.uint8)
    img = np.random.default_rng(2).integers(0, 256, (37, 23, 3), dtype=np.uint8)
    monkeypatch.setattr(palette, "LOOKUP_BAND_PIXELS", 50)  # 2 rows a band, the last one shorter
    np.testing.assert_array_equal(palette.lookup_colours(PALETTE, labels), PALETTE[labels])
    out = render_semantic(img, SemanticResult(labels), palette=PALETTE, alpha=0.25)
    want = np.round(0.75 * img + 0.25 * PALETTE[labels].astype(np.float64)).astype(np.uint8)
    assert np.abs(out.astype(int) - want).max() <= 1  # OpenCV's fixed-point rounding: at most one level


def test_instance_masks_contours_and_labels():
    img = np.zeros((40, 60, 3), np.uint8)
    masks = np.zeros((1, 40, 60), bool)
    masks[0, 10:30, 20:40] = True
    r = InstanceResult(np.array([[20, 10, 39, 29]], np.float32), np.array([0.9], np.float32), np.array([1], np.int32),
                       ImageShape(40, 60), masks, class_names=("bg", "car"))
    out = render_instance(img, r, palette=PALETTE, alpha=0.5)
    assert out[20, 30].tolist() == [128, 0, 0]  # inside: half red over black
    assert out[29, 30].tolist() == [255, 0, 0] and out[20, 20].tolist() == [255, 0, 0]  # contour: class colour
    assert (out[2:10, 20:40] != 0).any()  # the "car 0.90" label above the box
    assert out[35, 5].tolist() == [0, 0, 0]  # untouched outside


def test_panoptic_stuff_colour_and_boundaries():
    ids = np.zeros((20, 20), np.int32)
    ids[:, :10], ids[:, 10:] = 1, 2
    r = PanopticResult(ids, (Segment(1, 2, False), Segment(2, 3, False)))
    out = render_panoptic(np.zeros((20, 20, 3), np.uint8), r, palette=PALETTE, alpha=1.0)
    assert out[5, 2].tolist() == [0, 200, 0] and out[5, 17].tolist() == [0, 0, 100]
    assert out[5, 9].tolist() == [255, 255, 255] and out[5, 10].tolist() == [255, 255, 255]  # boundary


def test_panoptic_label_places_equal_the_sort_of_every_pixel():
    """Session 54: each thing's first pixel (where the panoptic overlay puts its label) from the starts of runs of
    equal ids instead of a sort of every pixel: the same places for 8-bit, 16-bit, larger and negative ids."""
    from edgeseg.stream.overlay import first_pixels

    rng = np.random.default_rng(3)
    for top in (2, 255, 256, 65535, 70000):
        blocks = rng.integers(0, top + 1, (9, 13))
        ids = np.repeat(np.repeat(blocks, 7, 0), 5, 1)[:60, :61]
        for given in (ids.astype(np.int32), ids.astype(np.int64), ids - 1, ids[:1], ids[:, :1], ids[::4, ::4]):
            present, first = np.unique(given.ravel(), return_index=True)
            assert first_pixels(given) == dict(zip(present.tolist(), first.tolist())), (top, given.shape)
    assert first_pixels(np.zeros((0, 3), np.int32)) == {}


def test_renderer_passes_frames_without_result_and_draws_hud():
    img = np.full((60, 120, 3), 30, np.uint8)
    r = Renderer(PALETTE, ("a", "b", "c", "d"))
    np.testing.assert_array_equal(r(img, None), img)
    out = r(img, SemanticResult(np.zeros((60, 120), np.uint8)), "12.0 fps")
    assert (out[2:18, :60] != blend(img, np.zeros_like(img), 0.5)[2:18, :60]).any()  # text drawn
    assert out[59, 119].tolist() == [15, 15, 15]  # 0.5 * 30 blended with black class 0


def test_jsonl_records_decode_back_to_the_masks(tmp_path):
    rng = np.random.default_rng(0)
    labels = rng.integers(0, 3, (30, 40)).astype(np.uint8)
    result = SemanticResult(labels, classes=("a", "b", "c"))
    sink = JsonLinesSink(tmp_path / "out" / "r.jsonl")
    sink.open()
    frame = Frame(np.zeros((30, 40, 3), np.uint8), pts_ns=123, index=4, source_id="cam")
    sink.write(frame, result)
    bad = Packet(frame)
    bad.error = "inference failed on frame 5"
    sink.write(Frame(frame.image, 160, 5, "cam"), None, bad)
    sink.close()
    first, second = (json.loads(x) for x in (tmp_path / "out" / "r.jsonl").read_text().splitlines())
    assert (first["index"], first["pts_ns"], first["source"], first["task"]) == (4, 123, "cam", "semantic")
    assert [s["class"] for s in first["segments"]] == ["a", "b", "c"]
    for s in first["segments"]:
        mask = rle_decode(s["rle"])
        np.testing.assert_array_equal(mask, labels == s["class_id"])
        assert s["area"] == int(mask.sum())
    assert second["error"] == "inference failed on frame 5" and second["segments"] == []


def test_instance_record_and_rle_matches_pycocotools():
    from pycocotools import mask as mask_util

    masks = np.zeros((2, 25, 30), bool)
    masks[0, 2:9, 3:17] = True
    masks[1, 10:24, 0:5] = True
    r = InstanceResult(np.array([[3, 2, 16, 8], [0, 10, 4, 23]], np.float32), np.array([0.8, 0.6], np.float32),
                       np.array([2, 1], np.int32), ImageShape(25, 30), masks, class_names=("bg", "person", "car"))
    rec = frame_record(Frame(np.zeros((25, 30, 3), np.uint8)), r)
    assert [s["class"] for s in rec["segments"]] == ["car", "person"]
    for s, m in zip(rec["segments"], masks):
        ref = mask_util.encode(np.asfortranarray(m.astype(np.uint8)))
        assert s["rle"]["counts"] == ref["counts"].decode() and s["area"] == int(mask_util.area(ref))


def test_label_pngs_round_trip(tmp_path):
    labels = np.arange(12, dtype=np.uint8).reshape(3, 4) % 5
    sink = LabelPngSink(tmp_path / "png")
    sink.open()
    sink.write(Frame(np.zeros((3, 4, 3), np.uint8), index=7), SemanticResult(labels))
    sink.write(Frame(np.zeros((3, 4, 3), np.uint8), index=8), None)  # no result: skipped
    got = cv2.imread(str(tmp_path / "png" / "000007.png"), cv2.IMREAD_UNCHANGED)
    np.testing.assert_array_equal(got, labels)
    assert sink.written == 1
    ids = np.array([[0, 1], [300, 70000]], np.int32)
    pan = label_image(PanopticResult(ids, (Segment(1, 1, True), Segment(300, 2, False), Segment(70000, 3, True))))
    rgb = pan.astype(np.int64)
    np.testing.assert_array_equal(rgb[..., 0] + 256 * rgb[..., 1] + 65536 * rgb[..., 2], ids)


def test_label_pngs_of_several_sources_go_to_a_folder_each(tmp_path):
    """Two folders of frames with the same file names, one stream: each camera's PNGs in its own
    folder, named after the frame files, none overwritten."""
    from edgeseg.cli import main
    from edgeseg.data.io import write_image
    from edgeseg.stream.sinks.files import source_folder
    from stream_helpers import make_images

    dirs = [tmp_path / "cam" / "a", tmp_path / "cam" / "b"]
    for d, seed in zip(dirs, (1, 2)):
        for i, img in enumerate(make_images(3, (64, 96), seed=seed)):
            write_image(d / f"f{i:03d}.png", img)
    out = tmp_path / "ids"
    assert main(["run", "--bundle", "shapes", "--source", str(dirs[0]), "--source", str(dirs[1]), "--png-dir", str(out),
                 "--backend", "onnxruntime", "--precision", "fp32"]) == 0
    folders = sorted(p.name for p in out.iterdir())
    assert folders == sorted(source_folder(str(d), set()) for d in dirs)
    for f in folders:
        assert sorted(p.name for p in (out / f).iterdir()) == ["f000.png", "f001.png", "f002.png"]
    assert source_folder("rtsp://cam1/s", set()) == "rtsp_cam1_s"
    assert source_folder("rtsp://cam1/s", {"rtsp_cam1_s"}) == "rtsp_cam1_s-2"
    assert source_folder("///", set()) == "source"


def test_label_pngs_of_two_files_with_one_stem_are_both_kept(tmp_path):
    sink = LabelPngSink(tmp_path / "png")
    sink.open()
    for i, lab in enumerate((1, 2)):
        sink.write(Frame(np.zeros((3, 4, 3), np.uint8), index=i, meta={"stem": "a"}),
                   SemanticResult(np.full((3, 4), lab, np.uint8)))
    assert sorted(p.name for p in (tmp_path / "png").iterdir()) == ["a-000001.png", "a.png"]
    assert cv2.imread(str(tmp_path / "png" / "a.png"), cv2.IMREAD_UNCHANGED).max() == 1


def test_an_mp4_sink_without_gstreamer_says_it_writes_mp4v_and_ignores_the_encoder(tmp_path, monkeypatch, caplog):
    """before: --encoder nvv4l2h264enc on a machine without GStreamer wrote OpenCV's mp4v unsaid."""
    import logging

    from edgeseg.stream import Mp4Sink
    from edgeseg.stream import gst as _gst

    monkeypatch.setattr(_gst, "available", lambda: (False, "no module named gi"))
    sink = Mp4Sink(tmp_path / "o.mp4", fps=10, encoder="nvv4l2h264enc")
    with caplog.at_level(logging.WARNING, logger="edgeseg.stream"):
        sink.open()
    assert sink.backend == "opencv"
    assert "o.mp4: GStreamer is not usable here (no module named gi), so OpenCV writes it as MPEG-4 Part 2 (mp4v)" in caplog.text
    assert "--encoder nvv4l2h264enc is not used" in caplog.text
    sink.write(Frame(np.zeros((16, 16, 3), np.uint8)), None)
    sink.close()
    assert (tmp_path / "o.mp4").stat().st_size > 0


def test_the_renderer_names_an_image_it_cannot_draw_on():
    """An application's float image reached OpenCV's putText: a bare cv2.error (an API audit, session 45)."""
    from edgeseg.errors import InputError
    from edgeseg.stream import Renderer
    from edgeseg.structures import SemanticResult

    r = Renderer(np.array([[0, 0, 0], [255, 0, 0]], np.uint8), ("a", "b"))
    with pytest.raises(InputError, match="expected a uint8 image"):
        r(np.zeros((8, 8, 3), np.float32), SemanticResult(np.zeros((8, 8), np.uint8), ("a", "b")))
    assert r(np.zeros((8, 8, 3), np.uint8), SemanticResult(np.ones((8, 8), np.uint8), ("a", "b"))).shape == (8, 8, 3)


def test_a_results_file_an_earlier_run_wrote_is_said_to_be_replaced(tmp_path, caplog):
    """A stream audit: --json-out and --sink replaced an earlier run's file unsaid (--png-dir warned, vos refused)."""
    import logging

    out = tmp_path / "r.jsonl"
    out.write_text('{"index": 0}\n')
    with caplog.at_level(logging.WARNING, logger="edgeseg.stream"):
        sink = JsonLinesSink(out)
        sink.open()
        sink.close()
    assert f"{out} exists: this run replaces its lines" in caplog.text
    # no frame came (session 50's fuzzing: a cut MP4 emptied the earlier run's results): the file as it was
    assert out.read_text() == '{"index": 0}\n' and "no frame came, so the file is left as it was" in caplog.text
    caplog.clear()
    with caplog.at_level(logging.WARNING, logger="edgeseg.stream"):
        sink = JsonLinesSink(tmp_path / "new.jsonl")
        sink.open()
        sink.close()
    assert "exists" not in caplog.text and (tmp_path / "new.jsonl").read_bytes() == b""  # none before: an empty one
    sink = JsonLinesSink(out)
    sink.open()
    sink.write(Frame(np.zeros((4, 4, 3), np.uint8), index=3, pts_ns=0), SemanticResult(np.zeros((4, 4), np.uint8)))
    sink.close()
    assert [json.loads(line)["index"] for line in out.read_text().splitlines()] == [3]  # the earlier line replaced
    import os
    import threading

    fifo = tmp_path / "pipe"
    os.mkfifo(fifo)  # a FIFO is opened at once: a reader of the pipe gets its end even when no frame came (a review)
    got: list[str] = []
    reader = threading.Thread(target=lambda: got.append(fifo.read_text()))
    reader.start()
    sink = JsonLinesSink(fifo)
    sink.open()
    sink.close()
    reader.join(10)
    assert not reader.is_alive() and got == [""]


def test_no_hud_draws_a_clean_overlay(tmp_path):
    """An audit (jetson-inference users): the fps/latency line and the class legend were always burned into the
    video. --no-hud (recipe [sinks] hud = false, Python hud=False) draws neither."""
    from edgeseg.stream.api import StreamOptions, build_pipeline
    from edgeseg.stream.stages import RenderStage

    def renderers(**kw):
        pipe = build_pipeline(StreamOptions(source="synthetic://?frames=1", bundle="shapes", sink=str(tmp_path / "o.mp4"),
                                            backend="onnxruntime", **kw))
        try:
            return [(s.renderer.hud, s.renderer.legend) for s in pipe.stages if isinstance(s, RenderStage)]
        finally:
            pipe.source.close()

    assert renderers() == [(True, True)] and renderers(hud=False) == [(False, False)]
    from edgeseg.cli.run import add_arguments
    import argparse

    p = argparse.ArgumentParser()
    add_arguments(p)
    assert p.parse_args(["--no-hud"]).hud is False and p.parse_args([]).hud is None  # None: the recipe's or True


def test_a_frame_of_another_size_is_fitted_into_the_video_not_stretched(tmp_path):
    """The left-open pass (session 58): a folder of frames of mixed sizes (or a camera that changed its resolution) was
    stretched to the first frame's size in the MP4 (a portrait frame squashed). Now fitted with its aspect kept,
    centred on black: a 32x64 (w x h) red frame in a 64x48 video is 24x48 of red at x 20-43."""
    from edgeseg.stream import Mp4Sink
    from edgeseg.stream.sinks.video import letterbox_into
    from stream_helpers import decode_mp4_frames

    out = letterbox_into(np.full((64, 32, 3), 200, np.uint8), (48, 64))
    assert out.shape == (48, 64, 3) and (out[:, 20:44] == 200).all() and not out[:, :20].any() and not out[:, 44:].any()
    sink = Mp4Sink(tmp_path / "mixed.mp4", fps=10)
    sink.open()
    sink.write(Frame(np.full((48, 64, 3), 90, np.uint8), index=0), None)
    sink.write(Frame(np.tile(np.array([220, 30, 30], np.uint8), (64, 32, 1)), index=1), None)
    sink.close()
    second = decode_mp4_frames(tmp_path / "mixed.mp4")[1].astype(int)
    assert second.shape == (48, 64, 3)
    assert np.abs(second[4:44, 24:40] - [220, 30, 30]).mean() < 12  # the frame, not stretched over the width
    assert second[:, :16].mean() < 12 and second[:, 48:].mean() < 12  # black bars either side
