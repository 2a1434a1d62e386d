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
