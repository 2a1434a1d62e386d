"""The instance decoder against hand-computed cases and an independent numpy reference: NMS, the
letterbox geometry, prototype masks (sampled per instance vs the full-frame bilinear map), dense
(SOLO) masks and RoI (Mask R-CNN) pastes, zero and thousands of detections, masks on the border,
and layouts that do not fit."""
from __future__ import annotations

from dataclasses import replace

import numpy as np
import pytest

from edgeseg.bundle import Manifest, OutputSpec
from edgeseg.decode import boxes_to_image, boxes_to_network, content_box, decode
from edgeseg.decode.instance import box_iou, decode_instance, nms
from edgeseg.errors import BundleError, UnsupportedError
from edgeseg.structures import ImageShape, InputSpec, InstanceOptions

LETTERBOX = InputSpec(size=ImageShape(64, 64), resize="letterbox", pad_value=114, mean=(0, 0, 0), std=(1, 1, 1))


def manifest(layout: str, nc: int = 3, spec: InputSpec = LETTERBOX, **opts) -> Manifest:
    kinds = {"prototype": ("detections", "prototypes"), "dense": ("scores", "classes", "masks"),
             "roi": ("boxes", "scores", "classes", "masks")}[layout]
    return Manifest(name="t", task="instance", classes=tuple(f"c{i}" for i in range(nc)), input=spec,
                    outputs=tuple(OutputSpec(k, k, "float32", (1,)) for k in kinds),
                    decoder=InstanceOptions(layout=layout, **opts).to_dict())


def meta_for(h: int, w: int, spec: InputSpec = LETTERBOX):
    return spec.preprocess(np.zeros((h, w, 3), np.uint8))[1]


# ---- NMS -----------------------------------------------------------------------------------------
def reference_nms(boxes, scores, thr):
    order = sorted(range(len(scores)), key=lambda i: -scores[i])
    keep = []
    for i in order:
        if all(box_iou(boxes[i:i + 1], boxes[j:j + 1])[0, 0] <= thr for j in keep):
            keep.append(i)
    return keep


def test_nms_hand_case():
    boxes = np.array([[0, 0, 10, 10], [1, 1, 11, 11], [20, 20, 30, 30], [0, 0, 10, 10]], np.float32)
    scores = np.array([0.9, 0.8, 0.7, 0.6], np.float32)
    # IoU(0,1) = 81 / 119 = 0.68: suppressed at 0.5, kept at 0.7
    assert nms(boxes, scores, 0.5).tolist() == [0, 2]
    assert nms(boxes, scores, 0.7).tolist() == [0, 1, 2]
    # per class: box 3 is the same box as 0 but another class
    assert nms(boxes, scores, 0.5, classes=np.array([0, 0, 0, 1])).tolist() == [0, 2, 3]
    assert nms(boxes, scores, 0.5, max_out=1).tolist() == [0]
    assert nms(np.zeros((0, 4)), np.zeros(0), 0.5).tolist() == []


def test_nms_matches_reference_on_random_boxes():
    rng = np.random.default_rng(0)
    xy = rng.uniform(0, 100, (300, 2))
    wh = rng.uniform(5, 40, (300, 2))
    boxes = np.concatenate([xy, xy + wh], 1).astype(np.float32)
    scores = rng.permutation(300).astype(np.float32) / 300  # distinct scores
    assert nms(boxes, scores, 0.45).tolist() == reference_nms(boxes, scores, 0.45)
    # per class and capped: the reference per class, merged by score, first 40
    classes = rng.integers(0, 3, 300)
    per_class = [i for c in range(3) for i in np.flatnonzero(classes == c)[
        reference_nms(boxes[classes == c], scores[classes == c], 0.45)]]
    expected = sorted(per_class, key=lambda i: -scores[i])[:40]
    assert nms(boxes, scores, 0.45, classes=classes, max_out=40).tolist() == expected


# ---- geometry ------------------------------------------------------------------------------------
def test_letterbox_geometry_hand_computed():
    m = meta_for(32, 64)  # 64x32 image -> 64x64 canvas: content 64x32 at top 16
    assert (m.content, m.pad_top, m.pad_left) == (ImageShape(32, 64), 16, 0)
    b = boxes_to_image(np.array([[0, 16, 64, 48], [10, 20, 30, 40]]), m)
    np.testing.assert_allclose(b, [[0, 0, 64, 32], [10, 4, 30, 24]])
    np.testing.assert_allclose(boxes_to_network(b, m), [[0, 16, 64, 48], [10, 20, 30, 40]])
    # a stride-4 output: 16x16 -> content rows 4..12
    assert content_box(m, ImageShape(16, 16)) == (4, 12, 0, 16)
    m2 = meta_for(100, 200)  # scale 0.32: content 64x32 (rounded) at top 16; image = (net - pad) * 200/64
    np.testing.assert_allclose(boxes_to_image(np.array([[32, 32, 64, 48]]), m2), [[100, 50, 200, 100]])
    # clipping to the image
    np.testing.assert_allclose(boxes_to_image(np.array([[-5, 0, 70, 70]]), m), [[0, 0, 64, 32]])


# ---- prototype layout ----------------------------------------------------------------------------
def full_map_reference(protos, coeff, meta, shape):
    """Bilinear (half-pixel centres, edge clamp) samples of coeff @ protos at every image pixel."""
    nm, ph, pw = protos.shape
    lowres = np.tensordot(coeff, protos, axes=1)
    sx = meta.network.width / pw * meta.original.width / meta.content.width
    sy = meta.network.height / ph * meta.original.height / meta.content.height
    tx = -meta.pad_left * meta.original.width / meta.content.width
    ty = -meta.pad_top * meta.original.height / meta.content.height
    xs = (np.arange(shape.width) + 0.5 - tx) / sx - 0.5
    ys = (np.arange(shape.height) + 0.5 - ty) / sy - 0.5
    x0 = np.clip(np.floor(xs).astype(int), 0, pw - 1)
    y0 = np.clip(np.floor(ys).astype(int), 0, ph - 1)
    x1, y1 = np.clip(x0 + 1, 0, pw - 1), np.clip(y0 + 1, 0, ph - 1)
    fx = np.clip(xs - np.floor(xs), 0, 1) * (xs >= 0) * (xs <= pw - 1)
    fy = np.clip(ys - np.floor(ys), 0, 1) * (ys >= 0) * (ys <= ph - 1)
    fx, fy = fx[None, :], fy[:, None]
    top = lowres[np.ix_(y0, x0)] * (1 - fx) + lowres[np.ix_(y0, x1)] * fx
    bot = lowres[np.ix_(y1, x0)] * (1 - fx) + lowres[np.ix_(y1, x1)] * fx
    return top * (1 - fy) + bot * fy


@pytest.mark.parametrize("h, w, fast", [(48, 96, True), (36, 64, True), (50, 100, True), (40, 90, True),
                                        (53, 101, False), (45, 160, False)])
def test_windows_sample_like_the_full_frame_reference(h, w, fast):
    # scales on the grid take one cv2.resize and a slice: integers (96x48 into 64x64: 6 image px per
    # prototype px) and small fractions with aligned windows (100x50: 6.25 = 25/4; 90x40: 5.625 and
    # 40/7); 101x53 (101/16: a period over GRID_MAX_PERIOD) and 160x45 (10 px but the letterbox
    # offset 57.5 is off the grid) fall back to warpAffine; both give the float64 bilinear values
    from edgeseg.decode.instance import _map_windows, _pixel_spans, _Resampler

    rng = np.random.default_rng(3)
    protos = rng.normal(size=(4, 16, 16)).astype(np.float32)
    coeff = rng.normal(size=4).astype(np.float32)
    m = meta_for(h, w)
    lowres = np.tensordot(coeff, protos, axes=1).astype(np.float32)
    ref = full_map_reference(protos, coeff, m, m.original)
    boxes = np.array([[0, 0, 0.4 * w, 0.5 * h], [0.3 * w, 0.2 * h, 0.9 * w, 0.7 * h], [0.55 * w, 0.5 * h, w, h]])
    rows, cols = _pixel_spans(boxes[:, 1], boxes[:, 3], h), _pixel_spans(boxes[:, 0], boxes[:, 2], w)
    win, aff = _map_windows(ImageShape(16, 16), m, rows, cols)
    resample = _Resampler(aff, win, np.stack([cols[1] - cols[0], rows[1] - rows[0]], 1))
    assert resample.fast.tolist() == [fast] * 3
    for i, (a, b, c, d) in enumerate(win.tolist()):
        (y0, y1), (x0, x1) = (int(rows[0][i]), int(rows[1][i])), (int(cols[0][i]), int(cols[1][i]))
        vals = resample(i, lowres[a:b, c:d], (x1 - x0, y1 - y0))
        err = np.abs(vals - ref[y0:y1, x0:x1]).max()
        assert err < 1e-5, err


def yolo_outputs(boxes_cxcywh, cls_scores, coeffs, protos, transpose=False):
    det = np.concatenate([boxes_cxcywh, cls_scores, coeffs], axis=1).T[None].astype(np.float32)  # [1, F, N]
    return {"detections": det.transpose(0, 2, 1) if transpose else det, "prototypes": protos[None].astype(np.float32)}


@pytest.mark.parametrize("transpose", [False, True])
def test_prototype_masks_equal_full_frame_reference(transpose):
    rng = np.random.default_rng(1)
    nm, nc = 4, 3
    protos = rng.normal(size=(nm, 16, 16)).astype(np.float32)
    boxes = np.array([[20, 30, 20, 12], [40, 32, 30, 30], [8, 20, 16, 10]], np.float32)  # cx, cy, w, h (network px)
    scores = np.array([[0.9, 0.1, 0.0], [0.2, 0.8, 0.1], [0.1, 0.1, 0.6]], np.float32)
    coeffs = rng.normal(size=(3, nm)).astype(np.float32)
    m = meta_for(48, 96)  # letterboxed: content 64x32 at top 16
    man = manifest("prototype", nc, num_masks=nm, score_threshold=0.25)
    r = decode(yolo_outputs(boxes, scores, coeffs, protos, transpose), m, man)
    assert len(r) == 3 and r.scores.tolist() == pytest.approx([0.9, 0.8, 0.6])
    assert r.classes.tolist() == [0, 1, 2]
    xyxy = np.concatenate([boxes[:, :2] - boxes[:, 2:] / 2, boxes[:, :2] + boxes[:, 2:] / 2], 1)
    np.testing.assert_allclose(r.boxes, boxes_to_image(xyxy, m), atol=1e-5)
    yy, xx = np.mgrid[0:48, 0:96]
    for i in range(3):
        ref = full_map_reference(protos, coeffs[i], m, m.original) > 0
        x1, y1, x2, y2 = r.boxes[i]
        ref &= (xx >= x1) & (xx < x2) & (yy >= y1) & (yy < y2)
        differ = int((ref != r.masks[i]).sum())
        assert differ <= max(2, ref.sum() // 200), f"instance {i}: {differ} of {ref.sum()} pixels differ"


def test_prototype_channels_last_products_give_the_per_window_masks():
    # many instances (windows covering their union several times over) take one channels-last copy
    # of the union and strided matrix-vector products; forced either way the masks are the same and
    # match the full-frame reference
    from edgeseg.decode.instance import decode_prototype

    rng = np.random.default_rng(4)
    nm, nc, n = 8, 2, 60
    protos = np.stack([cv2_smooth(rng, 16) for _ in range(nm)])
    boxes = np.concatenate([rng.uniform(10, 54, (n, 2)), rng.uniform(8, 24, (n, 2))], 1)
    coeffs = rng.normal(size=(n, nm))
    m = meta_for(48, 96)
    man = manifest("prototype", nc, num_masks=nm, iou_threshold=1.0, max_detections=n)
    outs = yolo_outputs(boxes, rng.uniform(0.3, 1, (n, nc)), coeffs, protos)
    per_window = decode_prototype(outs, m, man, man.decoder_options, transpose=False)
    channels_last = decode_prototype(outs, m, man, man.decoder_options, transpose=True)
    assert len(per_window) == len(channels_last) == n
    assert int((per_window.masks != channels_last.masks).sum()) <= 2  # float summation order only
    # prototypes in another memory order (a transposed runtime output) decode the same
    fortran = dict(outs, prototypes=np.asfortranarray(outs["prototypes"]))
    np.testing.assert_array_equal(decode_prototype(fortran, m, man, man.decoder_options, transpose=True).masks,
                                  channels_last.masks)
    yy, xx = np.mgrid[0:48, 0:96]
    order = np.argsort(-outs["detections"][0, 4:4 + nc].max(axis=0), kind="stable")
    for i, k in enumerate(order[:10]):
        x1, y1, x2, y2 = channels_last.boxes[i]
        ref = (full_map_reference(protos, outs["detections"][0, 4 + nc:, k], m, m.original) > 0)
        ref &= (xx >= x1) & (xx < x2) & (yy >= y1) & (yy < y2)
        assert int((ref != channels_last.masks[i]).sum()) <= max(2, ref.sum() // 200)


def cv2_smooth(rng, size: int) -> np.ndarray:
    import cv2

    return cv2.resize(rng.normal(size=(4, 4)).astype(np.float32), (size, size), interpolation=cv2.INTER_CUBIC)


def test_prototype_zero_and_thousands_of_detections_and_border():
    rng = np.random.default_rng(2)
    nm, nc, n = 2, 2, 3000
    protos = np.ones((nm, 16, 16), np.float32)
    m = meta_for(64, 64, InputSpec(size=ImageShape(64, 64), mean=(0, 0, 0), std=(1, 1, 1)))
    man = manifest("prototype", nc, num_masks=nm, max_detections=100)
    none = decode(yolo_outputs(np.full((n, 4), 10.0), np.zeros((n, nc)), np.zeros((n, nm)), protos), m, man)
    assert len(none) == 0 and none.masks.shape == (0, 64, 64)
    cxcy = rng.uniform(0, 64, (n, 2))
    boxes = np.concatenate([cxcy, rng.uniform(4, 30, (n, 2))], 1)
    many = decode(yolo_outputs(boxes, rng.uniform(0.3, 1, (n, nc)), np.ones((n, nm)), protos), m, man)
    assert len(many) == 100 and np.all(np.diff(many.scores) <= 0)
    # masks touching the border: a box hanging over every edge is clipped, its mask fills the image part
    edge = decode(yolo_outputs(np.array([[32, 32, 90, 90]]), np.array([[0.9, 0]]), np.ones((1, nm)), protos), m, man)
    np.testing.assert_allclose(edge.boxes, [[0, 0, 64, 64]])
    assert edge.masks.all()


def test_layout_that_does_not_fit_names_outputs_and_shapes():
    m = meta_for(64, 64)
    man = manifest("prototype", 80, num_masks=32)
    bad = {"detections": np.zeros((1, 50, 2100), np.float32), "prototypes": np.zeros((1, 32, 16, 16), np.float32)}
    with pytest.raises(UnsupportedError, match=r"detections \[1, 50, 2100\], prototypes \[1, 32, 16, 16\]"):
        decode(bad, m, man)
    with pytest.raises(UnsupportedError, match=r"no 'detections' output among a \[1, 116, 10\], b \[1, 2, 3\]"):
        decode({"a": np.zeros((1, 116, 10)), "b": np.zeros((1, 2, 3))}, m, man)


def test_options_are_validated_and_overridable():
    with pytest.raises(BundleError, match="score_threshold"):
        Manifest(name="t", task="instance", classes=("a",), input=LETTERBOX, outputs=(),
                 decoder={"layout": "dense", "score_threshold": 2})
    with pytest.raises(BundleError, match="unknown instance decoder option"):
        Manifest(name="t", task="instance", classes=("a",), input=LETTERBOX, outputs=(), decoder={"nms": 0.5})
    man = manifest("dense", 2)
    assert man.decoder_options.replace(score_threshold=0.5).score_threshold == 0.5
    assert InstanceOptions.from_dict(man.decoder_options.to_dict()) == man.decoder_options


# ---- dense (SOLO) layout -------------------------------------------------------------------------
def test_dense_masks_boxes_and_thresholds():
    spec = InputSpec(size=ImageShape(32, 32), mean=(0, 0, 0), std=(1, 1, 1))
    m = meta_for(64, 128, spec)  # plain resize: a 16x16 map px covers 4 image rows and 8 columns
    masks = np.zeros((1, 3, 16, 16), np.float32)
    masks[0, 0, 4:8, 2:6] = 1.0  # -> image rows 16..32, cols 16..48
    masks[0, 1, 0:16, 15] = 0.9  # touches the right border
    out = {"scores": np.array([[0.9, 0.6, 0.1]], np.float32), "classes": np.array([[1, 0, 1]], np.int64), "masks": masks}
    r = decode(out, m, manifest("dense", 2, spec, score_threshold=0.3))
    assert len(r) == 2 and r.classes.tolist() == [1, 0]
    # a hard-edged block: bilinear samples exceed 0.5 on the block's pixels but its four corners'
    # 3 (0.625 * 0.5625 < 0.5, hand-computed), exactly as the full-frame bilinear reference
    ref = full_map_reference(masks[0, :1], np.ones(1, np.float32), m, m.original) > 0.5
    assert np.array_equal(r.masks[0], ref) and r.masks[0].sum() == 16 * 32 - 4 * 3
    np.testing.assert_allclose(r.boxes[0], [16, 16, 48, 32])
    assert r.masks[1][:, -1].all() and r.boxes[1][2] == 128
    assert len(decode(out, m, manifest("dense", 2, spec, score_threshold=0.95))) == 0


def test_class_agnostic_drops_a_dense_mask_repeated_under_another_class():
    """An audit: street-instance gave one car as car 0.34, bus 0.28 and truck 0.25 (one mask: the graph's Matrix NMS
    is per class), and ``class_agnostic=True`` was silently ignored for dense and roi layouts. Now a mask overlapping
    a better one's of any class by more than iou_threshold is dropped; by hand: IoU 1 and 8/24 against 0.5."""
    spec = InputSpec(size=ImageShape(32, 32), mean=(0, 0, 0), std=(1, 1, 1))
    m = meta_for(32, 32, spec)
    masks = np.zeros((1, 4, 16, 16), np.float32)
    masks[0, :3, 2:6, 2:6] = 1.0  # one object, three classes
    masks[0, 3, 4:8, 4:8] = 1.0  # another, overlapping it by a quarter
    out = {"scores": np.array([[0.34, 0.28, 0.25, 0.3]], np.float32), "classes": np.array([[0, 1, 2, 1]], np.int64),
           "masks": masks}
    every = decode(out, m, manifest("dense", 3, spec, score_threshold=0.2, iou_threshold=0.5))
    assert every.scores.tolist() == pytest.approx([0.34, 0.3, 0.28, 0.25])
    one = decode(out, m, manifest("dense", 3, spec, score_threshold=0.2, iou_threshold=0.5, class_agnostic=True))
    assert one.scores.tolist() == pytest.approx([0.34, 0.3]) and one.classes.tolist() == [0, 1]
    inter = (one.masks[0] & one.masks[1]).sum()
    assert 0 < inter / (one.masks[0] | one.masks[1]).sum() < 0.5  # the neighbour kept: below the threshold


def test_class_agnostic_of_an_end_to_end_prototype_export():
    """A review: NMS-free (end-to-end) exports skip the decoder's NMS, and class_agnostic was still ignored for them."""
    nm = 2
    protos = np.ones((nm, 16, 16), np.float32)
    row = [10, 10, 40, 30, 0.9, 0, 1, 1]  # x1 y1 x2 y2 score class coefficients (network pixels)
    det = np.array([row, [10, 10, 40, 30, 0.7, 2, 1, 1], [50, 30, 60, 40, 0.6, 1, 1, 1]], np.float32)
    out = {"detections": det[None], "prototypes": protos[None]}
    m = meta_for(48, 64)
    every = decode(out, m, manifest("prototype", 3, num_masks=nm, prototype_format="end2end", score_threshold=0.25))
    one = decode(out, m, manifest("prototype", 3, num_masks=nm, prototype_format="end2end", score_threshold=0.25,
                                  iou_threshold=0.5, class_agnostic=True))
    assert every.classes.tolist() == [0, 2, 1] and one.classes.tolist() == [0, 1]


def test_detections_of_a_class_the_manifest_does_not_list_are_dropped_and_said_once(caplog):
    """An audit: a bundle whose classes were shortened by hand (2 names, 3 classes detected) lost every detection of
    the third class without a word (4 instances of 6)."""
    spec = InputSpec(size=ImageShape(32, 32), mean=(0, 0, 0), std=(1, 1, 1))
    m = meta_for(32, 32, spec)
    masks = np.zeros((1, 3, 16, 16), np.float32)
    masks[0, :, 2:6, 2:6] = 1.0
    out = {"scores": np.array([[0.9, 0.8, 0.1]], np.float32), "classes": np.array([[0, 2, 7]], np.int64), "masks": masks}
    man = replace(manifest("dense", 2, spec, score_threshold=0.3), name="shortened")
    with caplog.at_level("WARNING", logger="edgeseg.decode"):
        for _ in range(3):
            r = decode(out, m, man)
    assert r.classes.tolist() == [0]
    said = [rec.getMessage() for rec in caplog.records if "does not" not in rec.getMessage()]
    assert len(said) == 1 and "detects class id(s) 2," in said[0] and "lists 2 classes (ids 0..1)" in said[0]


# ---- roi (Mask R-CNN) layout ---------------------------------------------------------------------
def test_roi_paste_fills_the_box_and_nothing_else():
    spec = InputSpec(size=ImageShape(64, 64), mean=(0, 0, 0), std=(1, 1, 1))
    m = meta_for(64, 64, spec)
    out = {"boxes": np.array([[[10, 20, 30, 50], [0, 0, 8, 8]]], np.float32), "scores": np.array([[0.9, 0.8]], np.float32),
           "classes": np.array([[0, 1]], np.int64), "masks": np.ones((1, 2, 28, 28), np.float32)}
    r = decode_instance(out, m, manifest("roi", 2, spec))
    expect = np.zeros((64, 64), bool)
    expect[20:50, 10:30] = True
    assert np.array_equal(r.masks[0], expect)
    # left half of the RoI mask on: the left half of the box
    half = out["masks"].copy()
    half[0, 0, :, 14:] = 0
    r = decode_instance({**out, "masks": half}, m, manifest("roi", 2, spec))
    assert np.array_equal(r.masks[0], expect & (np.arange(64)[None, :] < 20))


# ---- compact results: crops, never N x H x W ---------------------------------------------------------
def test_decoders_give_compact_results_that_sinks_use_without_materialising():
    from edgeseg.stream.overlay import render_instance
    from edgeseg.stream.sinks import label_image
    from edgeseg.structures.records import instance_record
    from edgeseg.structures import rle_decode

    rng = np.random.default_rng(3)
    nm = 4
    protos = rng.normal(size=(nm, 16, 16)).astype(np.float32)
    boxes = np.array([[20, 30, 20, 12], [40, 32, 30, 30], [8, 20, 16, 10], [60, 40, 30, 40]], np.float32)
    scores = np.array([[0.9, 0.1, 0.0], [0.2, 0.8, 0.1], [0.1, 0.1, 0.6], [0.7, 0, 0]], np.float32)
    proto = decode(yolo_outputs(boxes, scores, rng.normal(size=(4, nm)), protos), meta_for(48, 96),
                   manifest("prototype", 3, num_masks=nm, score_threshold=0.25))
    spec = InputSpec(size=ImageShape(32, 32), mean=(0, 0, 0), std=(1, 1, 1))
    maps = np.zeros((1, 3, 16, 16), np.float32)
    maps[0, 0, 4:8, 2:6], maps[0, 1, :, 15], maps[0, 2, 9:14, 3:12] = 1.0, 0.9, 0.7
    dense = decode({"scores": np.array([[0.9, 0.6, 0.5]], np.float32), "classes": np.array([[1, 0, 1]], np.int64),
                    "masks": maps}, meta_for(64, 128, spec), manifest("dense", 2, spec, score_threshold=0.3))
    roi = decode({"boxes": np.array([[[10, 20, 30, 50], [0, 0, 8, 8], [40, 40, 90, 70]]], np.float32),
                  "scores": np.array([[0.9, 0.8, 0.7]], np.float32), "classes": np.array([[0, 1, 1]], np.int64),
                  "masks": rng.uniform(0, 1, (1, 3, 28, 28)).astype(np.float32)},
                 meta_for(64, 64, spec), manifest("roi", 2, spec))
    for r in (proto, dense, roi):
        assert len(r) >= 2 and r.is_compact and r._masks_cache is None and len(r.mask_crops) == len(r)
        h, w = r.image_shape.hw
        rec, png = instance_record(r), label_image(r)
        render_instance(np.zeros((h, w, 3), np.uint8), r, palette=np.eye(3, dtype=np.uint8) * 255, alpha=0.5)
        r[r.scores > 0.5].mask_crop(0)
        assert r._masks_cache is None  # nothing above materialised N x H x W
        for i, (x0, y0, x1, y1) in enumerate(r.mask_boxes.tolist()):
            assert r.mask_crops[i].shape == (y1 - y0, x1 - x0) and 0 <= x0 <= x1 <= w and 0 <= y0 <= y1 <= h
        masks = r.masks  # materialised on demand: the crops pasted
        assert masks.shape == (len(r), h, w) and masks.dtype == np.bool_
        for i, s in enumerate(rec["segments"]):
            np.testing.assert_array_equal(rle_decode(s["rle"]), masks[i])
            x0, y0, x1, y1 = r.mask_boxes[i]
            assert not masks[i].sum() - masks[i, y0:y1, x0:x1].sum()  # nothing outside the bounds
        want = np.zeros((h, w), np.uint16)
        for i, m in enumerate(masks):
            want[m] = i + 1
        np.testing.assert_array_equal(png, want)
    empty = decode(yolo_outputs(boxes, np.zeros((4, 3)), np.zeros((4, nm)), protos), meta_for(48, 96),
                   manifest("prototype", 3, num_masks=nm))
    assert len(empty) == 0 and empty.is_compact and empty.masks.shape == (0, 48, 96)


@pytest.mark.data
def test_run_and_predict_class_agnostic_on_street_frames(data_root, tmp_path):
    """``--class-agnostic`` (Ultralytics' agnostic_nms) through both commands: street-instance on three Cityscapes
    val frames gives fewer detections, no two of different classes with mask IoU above its iou_threshold, and the
    same ones through run and predict; a semantic bundle is refused, naming the option."""
    import json
    import shutil
    import subprocess
    import sys

    import edgeseg
    from edgeseg.structures import rle_decode

    images = tmp_path / "images"
    images.mkdir()
    for name in sorted((data_root / "cityscapes_panoptic" / "val").glob("darmstadt_00000[0-2]_000019.jpg")):
        shutil.copy(name, images / name.name)
    common = ["--bundle", "street-instance", "--source", str(images), "--backend", "onnxruntime", "--precision", "fp32"]
    for name, extra in (("every", []), ("one", ["--class-agnostic"])):
        r = subprocess.run([sys.executable, "-m", "edgeseg", "run", *common, "--json-out", str(tmp_path / f"{name}.jsonl"),
                            *extra], capture_output=True, text=True, timeout=300)
        assert r.returncode == 0, r.stderr
    frames = {n: [json.loads(x)["segments"] for x in (tmp_path / f"{n}.jsonl").read_text().splitlines()]
              for n in ("every", "one")}
    assert sum(map(len, frames["one"])) < sum(map(len, frames["every"]))
    iou = edgeseg.load("street-instance").options.iou_threshold
    for segs in frames["one"]:
        masks = [rle_decode(s["rle"]) for s in segs]
        for i in range(len(segs)):
            for j in range(i):
                if segs[i]["class"] != segs[j]["class"]:
                    assert (masks[i] & masks[j]).sum() <= iou * (masks[i] | masks[j]).sum()
    from edgeseg.cli import main

    assert main(["predict", "street-instance", str(images), "--json", str(tmp_path / "p.json"), "--class-agnostic",
                 "--backend", "onnxruntime", "--precision", "fp32"]) == 0
    got = json.loads((tmp_path / "p.json").read_text())["images"]
    assert [[d["class"] for d in g["instances"]] for g in got] == [[s["class"] for s in f] for f in frames["one"]]
    assert main(["predict", "road", str(images), "--json", str(tmp_path / "r.json"), "--class-agnostic"]) == 2
