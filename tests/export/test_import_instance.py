"""``edgeseg import --task instance`` on a real prototype-mask model made elsewhere (Ultralytics
YOLOv8n-seg, COCO, INT8 ConvInteger, opset 20) and on hand-made graphs of each layout variant."""
from __future__ import annotations

import numpy as np
import pytest

from edgeseg.errors import ExportError, InputError
from edgeseg.export.import_instance import anchor_count, detect_prototype_layout
from edgeseg.structures import ImageShape


def test_layout_detection_from_shapes():
    net = ImageShape(320, 320)
    assert anchor_count(net) == 2100
    # Ultralytics v8: [1, 4 + 80 + 32, 2100]; transposed exports too
    assert detect_prototype_layout({"o0": (1, 116, 2100), "o1": (1, 32, 80, 80)}, None, net, "m") == \
        ("o0", "o1", "yolov8", 80, 32)
    assert detect_prototype_layout({"o0": (1, 2100, 116), "o1": (1, 32, 80, 80)}, 80, net, "m")[2:] == ("yolov8", 80, 32)
    # YOLOv5-seg: objectness after the box, 3 anchors per cell
    assert detect_prototype_layout({"o0": (1, 6300, 117), "o1": (1, 32, 80, 80)}, 80, net, "m")[2:] == ("yolov5", 80, 32)
    # declared classes that do not fit: the error names every output and shape
    with pytest.raises(ExportError, match=r"o0 \[1, 116, 2100\], o1 \[1, 32, 80, 80\]"):
        detect_prototype_layout({"o0": (1, 116, 2100), "o1": (1, 32, 80, 80)}, 20, net, "m")
    with pytest.raises(ExportError, match="one rank-3 and one rank-4"):
        detect_prototype_layout({"o0": (1, 116, 2100)}, None, net, "m")


@pytest.mark.data
def test_yolov8_seg_import_matches_an_independent_decode(data_root, tmp_path):
    import edgeseg
    from edgeseg._ort import make_session
    from edgeseg.data.io import read_image
    from edgeseg.decode.instance import box_iou
    from edgeseg.export.importer import import_onnx
    from instance_ref import yolo_seg_reference

    src = data_root / "models" / "yolov8n_seg_int8_320.onnx"
    bundle = import_onnx(src, tmp_path / "yolo.edgeseg", task="instance", classes=None, input_spec=None)
    m = bundle.manifest
    assert m.task == "instance" and m.num_classes == 80 and m.classes[:3] == ("person", "bicycle", "car")
    assert (m.input.resize, m.input.pad_value, m.input.scale, m.input.mean, m.input.size) == \
        ("letterbox", 114, 1 / 255, (0.0, 0.0, 0.0), ImageShape(320, 320))
    opts = m.decoder_options
    assert (opts.layout, opts.prototype_format, opts.num_masks) == ("prototype", "yolov8", 32)
    with pytest.raises(InputError, match="metadata names 80 classes"):
        import_onnx(src, tmp_path / "bad", task="instance", classes=20, input_spec=None)

    session = make_session(str(src))
    images = sorted((data_root / "cityscapes_panoptic" / "val").glob("*.jpg"))[:4]
    predictor = edgeseg.load(bundle, backend="onnxruntime", precision="fp32")
    total = 0
    with predictor:
        for path in images:
            rgb = read_image(path)
            ours, ref = predictor(rgb), yolo_seg_reference(session, rgb, retina=True)
            assert len(ours) == len(ref["scores"]), path.name
            total += len(ours)
            if not len(ours):
                continue
            assert ours.classes.tolist() == ref["classes"].tolist()
            np.testing.assert_allclose(ours.scores, ref["scores"], atol=1e-5)
            assert np.diag(box_iou(ours.boxes, ref["boxes"])).min() > 0.99
            inter = (ours.masks & ref["masks"]).sum((1, 2))
            union = (ours.masks | ref["masks"]).sum((1, 2))
            iou = inter / np.maximum(union, 1)
            # same algorithm as Ultralytics' retina masks; the reference resizes the cut prototype plane
            # with torch, ours samples the same bilinear map per instance with OpenCV
            assert iou.min() > 0.97, (path.name, iou.round(3).tolist())
    assert total >= 5  # the frames have cars and people


def test_end_to_end_layout_detection():
    """YOLO26-seg's default export and nms=True exports: [1, K, 6 + nm] final detections."""
    net = ImageShape(320, 320)
    e2e = {"output0": (1, 300, 38), "output1": (1, 32, 80, 80)}
    assert detect_prototype_layout(e2e, 80, net, "m") == ("output0", "output1", "end2end", 80, 32)
    assert detect_prototype_layout(e2e, 80, net, "m", end2end=True)[2] == "end2end"
    assert detect_prototype_layout({"o": (1, 38, 100), "p": (1, 32, 80, 80)}, 3, net, "m")[2:] == ("end2end", 3, 32)
    # no names: the class count cannot come from the shapes
    with pytest.raises(ExportError, match="class count is unknown") as e:
        detect_prototype_layout(e2e, None, net, "m")
    assert "--classes" in e.value.fix and "output0 [1, 300, 38]" in str(e.value)
    # a two-class raw v8 head has 4 + 2 + 32 = 38 features too: its anchor count tells it apart
    assert detect_prototype_layout({"o": (1, 38, 2100), "p": (1, 32, 80, 80)}, None, net, "m")[2:] == ("yolov8", 2, 32)
    # metadata that says end-to-end over a raw head: the shapes win
    assert detect_prototype_layout({"o": (1, 116, 2100), "p": (1, 32, 80, 80)}, 80, net, "m", end2end=True)[2] == "yolov8"


def test_end_to_end_decode_keeps_the_graph_detections():
    """Rows above the threshold, best first, capped; no NMS (two overlapping boxes both stay); class
    ids outside the model's classes are a layout error naming the outputs."""
    from edgeseg.bundle import Manifest, OutputSpec
    from edgeseg.decode.instance import decode_instance
    from edgeseg.errors import UnsupportedError
    from edgeseg.structures import InputSpec, InstanceOptions

    spec = InputSpec(size=ImageShape(64, 64), resize="letterbox", pad_value=114, mean=(0.0, 0.0, 0.0),
                     std=(1.0, 1.0, 1.0), scale=1 / 255)
    opts = InstanceOptions(layout="prototype", prototype_format="end2end", num_masks=2, max_detections=2)
    m = Manifest(name="e2e", task="instance", classes=("a", "b", "c"), input=spec,
                 outputs=(OutputSpec("detections", "detections"), OutputSpec("prototypes", "prototypes")),
                 decoder=opts.to_dict())
    det = np.zeros((1, 5, 8), np.float32)
    det[0, 0] = [8, 8, 40, 40, 0.9, 2, 1, 0]
    det[0, 1] = [10, 10, 42, 42, 0.8, 2, 1, 0]  # overlaps the first (IoU 0.78): kept, no NMS
    det[0, 2] = [0, 0, 16, 16, 0.7, 0, 1, 0]    # beyond max_detections = 2
    det[0, 3] = [0, 0, 16, 16, 0.1, 1, 1, 0]    # under the score threshold
    protos = np.zeros((1, 2, 16, 16), np.float32)
    protos[0, 0] = 5.0  # mask logit 5 everywhere: the mask is the box
    _, meta = spec.preprocess(np.zeros((64, 64, 3), np.uint8))
    r = decode_instance({"detections": det, "prototypes": protos}, meta, m)
    assert r.classes.tolist() == [2, 2] and np.allclose(r.scores, [0.9, 0.8])
    np.testing.assert_allclose(r.boxes, [[8, 8, 40, 40], [10, 10, 42, 42]])
    assert r.masks[0].sum() == 32 * 32 and r.masks[0][8:40, 8:40].all()
    det[0, 1, 5] = 7  # not one of the 3 classes
    with pytest.raises(UnsupportedError, match=r"class id 7 is not one of the model's 3 classes.*"):
        decode_instance({"detections": det, "prototypes": protos}, meta, m)


@pytest.mark.data
def test_end_to_end_seg_import_matches_an_independent_decode(data_root, tmp_path):
    """The shared YOLOv8n-seg rewritten into YOLO26's end-to-end output ([1, 300, 38] + prototypes,
    end2end=True in its metadata): imported without options, decoded as Ultralytics' predictor
    decodes such a model (confidence filter only)."""
    import edgeseg
    from edgeseg._ort import make_session
    from edgeseg.data.io import read_image
    from edgeseg.decode.instance import box_iou
    from edgeseg.export.importer import import_onnx
    from instance_ref import make_end2end, yolo_seg_reference

    src = tmp_path / "yolo_e2e.onnx"
    make_end2end(data_root / "models" / "yolov8n_seg_int8_320.onnx", src)
    bundle = import_onnx(src, tmp_path / "e2e.edgeseg", task="instance", classes=None, input_spec=None)
    m = bundle.manifest
    assert m.num_classes == 80 and m.decoder_options.prototype_format == "end2end"
    assert bundle.report["import"]["format"] == "end2end"
    session = make_session(str(src))
    predictor = edgeseg.load(bundle, backend="onnxruntime", precision="fp32")
    total = 0
    with predictor:
        for path in sorted((data_root / "cityscapes_panoptic" / "val").glob("*.jpg"))[:4]:
            rgb = read_image(path)
            ours, ref = predictor(rgb), yolo_seg_reference(session, rgb, retina=True, end2end=True, max_det=100)
            assert len(ours) == len(ref["scores"]), path.name
            total += len(ours)
            if not len(ours):
                continue
            assert ours.classes.tolist() == ref["classes"].tolist()
            np.testing.assert_allclose(ours.scores, ref["scores"], atol=1e-5)
            assert np.diag(box_iou(ours.boxes, ref["boxes"])).min() > 0.99
            iou = (ours.masks & ref["masks"]).sum((1, 2)) / np.maximum((ours.masks | ref["masks"]).sum((1, 2)), 1)
            assert iou.min() > 0.97, (path.name, iou.round(3).tolist())
    assert total >= 5
