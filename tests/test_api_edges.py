"""The public helpers a program calls with its own values (session 50's audit of the Python API): colours of labels
outside the palette, the legend of a panoptic overlay, renderer settings and sizes, metric settings, box shapes.
Each case was a silent wrong answer, a 58 TiB allocation or a numpy/OpenCV error before."""
from __future__ import annotations

import numpy as np
import pytest

from edgeseg.errors import InputError, StreamError
from edgeseg.structures import ImageShape, InstanceResult, PanopticResult, SemanticResult
from edgeseg.structures.palette import CAMVID_PALETTE, colorize, default_palette
from edgeseg.structures.results import Segment


def test_labels_outside_the_palette_are_void_whatever_their_dtype():
    """colorize clipped -1 to class 0 (sky's grey for an ignore index); the overlay drew an int32 label 255 in the
    last class's colour where the same uint8 label was void."""
    from edgeseg.stream.overlay import render_semantic

    out = colorize(np.array([[-1, 0, 10, 11, 255]]), CAMVID_PALETTE, void_color=(9, 9, 9))
    assert out[0].tolist() == [[9, 9, 9], [128, 128, 128], [0, 128, 192], [9, 9, 9], [9, 9, 9]]
    assert (colorize(np.array([[3]], np.uint8), default_palette(300))[0, 0] == default_palette(300)[3]).all()
    assert (colorize(np.array([[299]], np.int32), default_palette(300))[0, 0] == default_palette(300)[299]).all()
    pal, image = default_palette(3), np.full((1, 1, 3), 100, np.uint8)
    for dtype in (np.uint8, np.int32, np.int64):
        assert render_semantic(image, SemanticResult(np.array([[255]], dtype)), pal, 1.0)[0, 0].tolist() == [0, 0, 0]
    with pytest.raises(InputError, match="labels must be an integer array"):
        colorize(np.zeros((2, 2), np.float32), CAMVID_PALETTE)
    from edgeseg.stream.overlay import Renderer, present_classes

    wide = SemanticResult(np.array([[2**31 - 1, 2], [2, 7]], np.int32))  # the legend's bincount: an 8 GB table
    assert present_classes(wide) == [2, 7, 2**31 - 1]
    assert Renderer(default_palette(8))(np.zeros((2, 2, 3), np.uint8), wide).shape == (2, 2, 3)


def test_a_panoptic_legend_names_the_classes_its_segments_are():
    """present_classes gave category ids, which the legend read as class indices: street-panoptic's legend said
    'motorcycle', '20', '21' for a frame of road, sky and cars."""
    from edgeseg.stream.overlay import present_classes

    ids = np.zeros((4, 6), np.int32)
    ids[:2], ids[2:, :3], ids[2:, 3:] = 1, 2, 3
    r = PanopticResult(ids, (Segment(1, 7, False), Segment(2, 26, True), Segment(3, 99, True)),
                       class_names=("road", "sky", "car"), category_ids=(7, 23, 26))
    assert present_classes(r) == [0, 2]  # road and car; category 99 is no class: not in the legend


def test_the_renderer_refuses_settings_and_sizes_it_cannot_draw():
    from edgeseg.stream.overlay import Renderer

    for alpha in (float("nan"), -1, 2, "0.5", True):
        with pytest.raises(InputError, match="alpha must be a number from 0"):
            Renderer(alpha=alpha)
    with pytest.raises(InputError, match=r"\[K, 3\] table"):
        Renderer(palette=np.zeros((4, 4)))
    with pytest.raises(InputError, match="multiply by 255"):
        Renderer(palette=np.full((3, 3), 0.5))
    with pytest.raises(InputError, match="integers from 0 to 255"):
        Renderer(palette=[[0, 0, 300]])
    assert Renderer(palette=np.zeros((0, 3)), classes=("a",)).palette.shape == (256, 3)  # none: the defaults
    frame = np.zeros((40, 40, 3), np.uint8)
    inst = InstanceResult(np.array([[1, 1, 30, 30]], np.float32), np.ones(1, np.float32), np.zeros(1, np.int32),
                          ImageShape(320, 640), masks=np.ones((1, 320, 640), bool))
    pan = PanopticResult(np.ones((320, 640), np.int32), (Segment(1, 0, False),))
    for result in (inst, pan):  # an instance result drew in a corner; a panoptic one raised OpenCV's error
        with pytest.raises(StreamError, match="does not match the frame it is drawn on, 40x40"):
            Renderer()(frame, result)
    nan_box = InstanceResult(np.array([[np.nan, 0, 5, 5], [0, 0, 1e30, 1e30]], np.float32), np.ones(2, np.float32),
                             np.ones(2, np.int32), ImageShape(40, 40))
    out = Renderer(legend=False)(frame, nan_box)  # int(nan) raised; 1e30 raised in cv2.rectangle
    assert out[30, 0].any() and not out[30, 1:].any()  # the huge box's outline, clipped: its left edge
    with pytest.raises(InputError, match="segments' ids must be positive"):
        PanopticResult(np.ones((2, 2), np.int32), (Segment(-1, 0, False),))
    ids = np.kron(np.array([[-1, 2**40], [3, 0]], np.int64), np.ones((16, 16), np.int64))  # void below 0; a huge id
    huge = PanopticResult(ids, (Segment(3, 1, False), Segment(2**40, 2, True)))  # (a table of every id: 8 TiB)
    drawn = Renderer(palette=[[0, 0, 0], [200, 0, 0], [0, 200, 0]], alpha=1.0, legend=False)(
        np.zeros((32, 32, 3), np.uint8), huge)  # (the thing's label is drawn over its block: not looked at)
    assert drawn[8, 8].tolist() == drawn[24, 24].tolist() == [0, 0, 0] and drawn[24, 8].tolist() == [200, 0, 0]


def test_metric_settings_that_cannot_mean_anything_are_refused():
    from edgeseg.eval.panoptic import PanopticMetric
    from edgeseg.eval.semantic import SemanticMetric
    from edgeseg.eval.vos import bound_pixels, boundary_measure

    g = np.zeros((20, 20), int)
    g[:, 10:] = 1
    m = SemanticMetric(2)
    m.update(g, g)
    assert m.compute().boundary_f1 == 1.0
    for kw in ({"boundary_tolerance": float("nan")}, {"boundary_tolerance": -1}, {"boundary_tolerance_px": -3},
               {"boundary_tolerance_px": float("inf")}, {"ignore_index": None}):
        with pytest.raises(InputError):  # each reported F1 0 (or 1 for inf) for identical maps
            SemanticMetric(2, **kw)
    for n in (2.5, "3", 0, True):
        with pytest.raises(InputError, match="whole number of classes"):
            SemanticMetric(n)
    mask = np.zeros((50, 50), bool)
    mask[10:30, 10:30] = True
    assert bound_pixels((50, 50), 1e6) == 71.0  # the diagonal's ceiling: it reaches every pixel already
    assert boundary_measure(mask, mask, 1e6) == 1.0  # asked numpy for a 58 TiB disk
    shifted = np.roll(mask, 3, axis=1)
    assert boundary_measure(mask, shifted, 71) == boundary_measure(mask, shifted, 1e6) == 1.0
    for bad in (-1, float("nan"), float("inf")):
        with pytest.raises(InputError, match="boundary tolerance must be a finite number"):
            boundary_measure(mask, mask, bad)
    with pytest.raises(InputError, match="empty"):
        boundary_measure(np.zeros((0, 0), bool), np.zeros((0, 0), bool))
    pm = PanopticMetric()
    r = PanopticResult(np.ones((2, 2), np.int32), (Segment(1, 0, False),))
    with pytest.raises(InputError, match="gt_crowd_ids"):  # "12" was the crowd ids {1, 2}
        pm.update(r, r, gt_crowd_ids="12")
    with pytest.raises(InputError, match="must be a PanopticResult"):
        pm.update(np.ones((2, 2), np.int32), r)


def test_box_helpers_take_n_by_4_boxes_only_and_bounds_check_the_index():
    from edgeseg.decode.geometry import boxes_to_image
    from edgeseg.structures import PreprocessMeta

    meta = PreprocessMeta(original=ImageShape(100, 200), network=ImageShape(50, 100), content=ImageShape(50, 100))
    assert boxes_to_image(np.array([10, 10, 20, 20]), meta).tolist() == [[20, 20, 40, 40]]
    with pytest.raises(InputError, match=r"boxes must be \[N, 4\]"):  # [4, 5] became 5 garbage boxes
        boxes_to_image(np.ones((4, 5)), meta)
    r = InstanceResult(np.zeros((2, 4), np.float32), np.ones(2, np.float32), np.zeros(2, np.int32), ImageShape(4, 4))
    with pytest.raises(IndexError, match="out of range for 2"):  # (0, 0, 0, 0) for any index before
        r.mask_bounds(99)


def test_j_and_f_says_why_a_short_sequence_or_a_nan_mask_has_no_score():
    """evaluate_sequence of 1-2 frames returned NaN scores without a word (DAVIS skips the first and last frame);
    NaN mask pixels counted as foreground."""
    from edgeseg.eval.vos import evaluate_sequence, region_similarity

    gt = [np.pad(np.ones((2, 2), np.uint8), 1)] * 2
    with pytest.raises(InputError, match="has 2 frame\\(s\\).*needs at least 3"):
        evaluate_sequence("s", gt, gt)
    assert [s.j.tolist() for s in evaluate_sequence("s", gt * 2, gt * 2)] == [[1.0, 1.0]]
    with pytest.raises(InputError, match="NaN"):
        region_similarity(np.ones((2, 2), bool), np.full((2, 2), np.nan))


def test_the_legend_lists_the_classes_a_label_map_holds_as_a_histogram_counts_them():
    """present_classes runs on every frame of a stream (0.76 ms at 960x540 with bincount's cast to intp; OpenCV's
    histogram since): the same classes on edge cases and random maps, views included."""
    from edgeseg.stream.overlay import present_classes
    from edgeseg.structures import SemanticResult

    rng = np.random.default_rng(0)
    cases = [np.zeros((3, 4), np.uint8), np.full((5, 5), 255, np.uint8), np.array([[0, 7], [200, 7]], np.uint8),
             rng.integers(0, 256, (540, 960)).astype(np.uint8), rng.integers(0, 19, (37, 53)).astype(np.uint8)[:, ::2],
             np.zeros((0, 4), np.uint8)]
    for labels in cases:
        want = sorted(int(v) for v in np.unique(labels))
        assert present_classes(SemanticResult(labels)) == want
    assert present_classes(SemanticResult(cases[2]), (7, 9)) == [7]


def test_an_array_too_large_for_the_memory_left_is_refused_before_any_work(monkeypatch):
    """Files were checked before decoding (session 53); an array given to the Python API was not: a 12000x12000 frame
    takes 2.5-4.9 bytes a pixel more (semantic, panoptic) and in a small container the kernel killed the process. Now
    an array that surely does not fit (the task's least) is an error naming its size, the memory it takes and what is
    free; below 16 megapixels nothing is checked, and a figure that cannot be read refuses nothing."""
    from edgeseg import _memory
    from edgeseg.predictor import TASK_BYTES_PER_PIXEL, check_room

    big = np.broadcast_to(np.zeros(3, np.uint8), (4000, 4100, 3))  # 16.4 megapixels, no memory taken
    need = int(4000 * 4100 * TASK_BYTES_PER_PIXEL["panoptic"])  # 52.5 MB at 3.2 bytes a pixel
    monkeypatch.setattr(_memory, "available_bytes", lambda: need - 1)
    with pytest.raises(InputError, match=r"the image is 4100x4000 \(16 megapixels\): segmenting it takes at least "
                                         r"50 MiB more and 50 MiB is free") as e:
        check_room(big, "panoptic")
    assert "downscale it first" in e.value.fix
    check_room(big, "instance")  # compact masks: 0.2 bytes a pixel
    monkeypatch.setattr(_memory, "available_bytes", lambda: need)
    check_room(big, "panoptic")
    monkeypatch.setattr(_memory, "available_bytes", lambda: 1)
    check_room(np.zeros((3000, 4000, 3), np.uint8), "panoptic")  # 12 megapixels: not checked
    monkeypatch.setattr(_memory, "available_bytes", lambda: None)  # not readable: not refused
    check_room(big, "panoptic")


@pytest.mark.slow
def test_a_large_array_that_fits_is_segmented_and_one_that_cannot_is_refused(tmp_path):
    """The figures are lower bounds: in a 1000 MiB memory cgroup a 12000x12000 frame given to `road` segments (peak
    796 MiB); with its image in memory and too little left (600 MiB in all) it is refused, never killed (before: killed,
    exit -9). Needs root (cgroup v1)."""
    import os
    import subprocess
    import sys
    from pathlib import Path

    group = Path("/sys/fs/cgroup/memory")
    if os.geteuid() != 0 or not group.is_dir():
        pytest.skip("needs root and the cgroup v1 memory controller to limit a child's memory")
    code = ("import numpy as np, edgeseg\np = edgeseg.load('road')\nimg = np.full((12000, 12000, 3), 90, np.uint8)\n"
            "try:\n    print('labels', p(img).labels.shape)\nexcept edgeseg.errors.InputError as e:\n    print('refused', e)\n")
    for limit_mib, expect in ((1000, "labels (12000, 12000)"), (600, "refused the image is 12000x12000")):
        g = group / f"edgeseg_test_{os.getpid()}_{limit_mib}"
        g.mkdir()
        try:
            (g / "memory.limit_in_bytes").write_text(str(limit_mib << 20))
            run = subprocess.run(["bash", "-c", f"echo $$ > {g}/cgroup.procs; exec {sys.executable} -c \"$0\"", code],
                                 capture_output=True, text=True, timeout=300,
                                 env={**os.environ, "EDGESEG_CACHE_DIR": str(tmp_path)})
        finally:
            g.rmdir()
        assert run.returncode == 0 and expect in run.stdout, (limit_mib, run.stdout, run.stderr[-2000:])
