"""Importing mask-classification models (MaskFormer, Mask2Former) for the three tasks.

Each import's predictions are compared with transformers' own post-processing (MaskFormer's image
processor: it decides at the masks' size or the target size it is given, without Mask2Former's
intermediate 384x384 resize) run on the raw outputs of the same ONNX file in ONNX Runtime; the semantic
one with the authors' semantic inference (:func:`authors_semantic`), which transformers' processors
reorder (see :mod:`edgeseg.export.import_query`).
"""
from __future__ import annotations

from types import SimpleNamespace

import numpy as np
import pytest

import edgeseg
from edgeseg.errors import ExportError
from edgeseg.export.import_query import detect_query_outputs
from edgeseg.export.importer import import_onnx
from edgeseg.structures import InputSpec

torch = pytest.importorskip("torch")
pytest.importorskip("transformers.models.maskformer.image_processing_pil_maskformer")  # transformers 5

NAMES = ("road", "sky", "person", "car")


def query_onnx(path, *, q=8, c=4, size=64, stride=4, names=("class_queries_logits", "masks_queries_logits"),
               hidden: int = 0, seed=0, batch: int | str = 1, contrib: bool = False):
    """A model with a mask-classification model's two outputs, both computed from the image: masks by a
    strided convolution, class logits by a 1x1 convolution pooled over the image. ``hidden``: also a
    ``[1, Q, hidden]`` output, as a full transformers export writes its decoder's hidden state. ``batch``: the
    input's batch axis (a name: symbolic); ``contrib``: the masks pass through ONNX Runtime's com.microsoft
    ``Gelu``, which ONNX shape inference cannot see through (ORT-optimised exports are full of such ops)."""
    import onnx
    from onnx import TensorProto as T
    from onnx import helper as h
    from onnx import numpy_helper as nh

    rng = np.random.default_rng(seed)
    k = stride
    inits = [nh.from_array((rng.normal(0, 1.5, (q, 3, k, k)) / k).astype(np.float32), "wm"),
             nh.from_array(rng.normal(0, 3, (q * (c + 1), 3, 1, 1)).astype(np.float32), "wc"),
             nh.from_array(rng.normal(0, 3, (q * (c + 1),)).astype(np.float32), "bc"),
             nh.from_array(np.array([-1, q, c + 1], np.int64), "shape")]
    nodes = [h.make_node("Conv", ["pixel_values", "wm"], ["m0" if contrib else names[1]], strides=[k, k]),
             h.make_node("Conv", ["pixel_values", "wc", "bc"], ["c1"]),
             h.make_node("GlobalAveragePool", ["c1"], ["c2"]),
             h.make_node("Reshape", ["c2", "shape"], [names[0]])]
    outs = [h.make_tensor_value_info(names[0], T.FLOAT, [1, q, c + 1]),
            h.make_tensor_value_info(names[1], T.FLOAT, [1, q, size // k, size // k])]
    if contrib:
        nodes.insert(1, h.make_node("Gelu", ["m0"], [names[1]], domain="com.microsoft"))
    if hidden:
        inits.append(nh.from_array(rng.normal(0, 1, (c + 1, hidden)).astype(np.float32), "wh"))
        nodes.append(h.make_node("MatMul", [names[0], "wh"], ["last_hidden_state"]))
        outs.insert(0, h.make_tensor_value_info("last_hidden_state", T.FLOAT, [1, q, hidden]))
    g = h.make_graph(nodes, "query", [h.make_tensor_value_info("pixel_values", T.FLOAT, [batch, 3, size, size])], outs,
                     inits)
    m = h.make_model(g, opset_imports=[h.make_opsetid("", 17)] + ([h.make_opsetid("com.microsoft", 1)] if contrib else []))
    m.ir_version = 8
    onnx.save(m, str(path))
    return path


def _raw(path, image: np.ndarray, spec: InputSpec) -> dict[str, np.ndarray]:
    import onnxruntime as ort

    x, _ = spec.preprocess(image)
    s = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    return {o.name: y for o, y in zip(s.get_outputs(), s.run(None, {"pixel_values": x}))}


def _hf(raw: dict[str, np.ndarray]):
    from transformers.models.maskformer.image_processing_pil_maskformer import MaskFormerImageProcessorPil

    out = SimpleNamespace(class_queries_logits=torch.from_numpy(raw["class_queries_logits"]),
                          masks_queries_logits=torch.from_numpy(raw["masks_queries_logits"]))
    return MaskFormerImageProcessorPil(), out


def _image(seed: int, h: int, w: int) -> np.ndarray:
    rng = np.random.default_rng(seed)
    import cv2

    return cv2.resize(rng.integers(0, 256, (h // 8, w // 8, 3), dtype=np.uint8), (w, h), interpolation=cv2.INTER_LINEAR)


SPEC = InputSpec(size=(64, 64))


def authors_semantic(raw, net_hw, image_hw) -> np.ndarray:
    """MaskFormer's and Mask2Former's semantic inference as their authors' code runs it (Detectron2's
    ``MaskFormer.forward``: the mask logits resized to the input, ``semantic_inference``, ``sem_seg_postprocess``)."""
    F = torch.nn.functional
    cls = torch.as_tensor(raw["class_queries_logits"]).softmax(-1)[..., :-1]
    masks = F.interpolate(torch.as_tensor(raw["masks_queries_logits"]), size=net_hw, mode="bilinear", align_corners=False)
    seg = torch.einsum("bqc,bqhw->bchw", cls, masks.sigmoid())
    return F.interpolate(seg, size=image_hw, mode="bilinear", align_corners=False)[0].argmax(0).numpy()


def test_semantic_equals_the_authors_inference(tmp_path):
    src = query_onnx(tmp_path / "m.onnx")
    b = import_onnx(src, tmp_path / "sem", task="semantic", classes=NAMES, input_spec=SPEC)
    assert b.report["import"]["source_layout"] == "mask-classification"
    assert [(o.kind, o.shape) for o in b.manifest.outputs] == [("logits", (1, 4, 64, 64))]  # at the input's size
    pred = edgeseg.load(b.root, backend="onnxruntime")
    for seed, hw in ((0, (64, 64)), (1, (48, 80)), (2, (120, 90))):
        img = _image(seed, *hw)
        ref = authors_semantic(_raw(src, img, SPEC), (64, 64), hw)
        agree = (pred(img).labels == ref).mean()
        assert agree >= 0.999, (seed, agree)  # the same bilinear resizes of the same sums; float ties aside
        assert len(np.unique(ref)) >= 2


def test_instance_equals_transformers(tmp_path):
    src = query_onnx(tmp_path / "m.onnx", seed=3)
    b = import_onnx(src, tmp_path / "inst", task="instance", classes=NAMES, input_spec=None)
    m = b.manifest
    assert m.decoder_options.layout == "dense" and m.input.resize == "resize" and m.input.mean == pytest.approx((0.485, 0.456, 0.406))
    pred = edgeseg.load(b.root, backend="onnxruntime")
    pred.set_options(score_threshold=0.05)
    compared = 0
    for seed in range(3):
        img = _image(seed, 64, 64)
        proc, out = _hf(_raw(src, img, m.input))
        ref = proc.post_process_instance_segmentation(out, threshold=0.05, target_sizes=[(64, 64)],
                                                      return_binary_maps=True)[0]
        res = pred(img)
        # the same detections: class and score (transformers keeps score >= 0.05 with a non-empty mask; edgeseg > 0.05)
        want = sorted((s["label_id"], s["score"]) for s in ref["segments_info"])
        got = sorted((int(c), float(s)) for c, s in zip(res.classes, res.scores))
        assert [c for c, _ in got] == [c for c, _ in want], seed
        assert np.allclose([s for _, s in got], [s for _, s in want], atol=1e-4), seed
        # and the same masks up to the resampling: transformers thresholds at 16x16 and resizes nearest, edgeseg
        # resizes the probabilities bilinearly and thresholds (boundary pixels differ)
        maps = ref["segmentation"].numpy().astype(bool)
        for s, ref_mask in zip(ref["segments_info"], maps):
            k = next(i for i, (c, sc) in enumerate(zip(res.classes, res.scores))
                     if int(c) == s["label_id"] and abs(float(sc) - s["score"]) < 1e-4)
            mine = res.masks[k]
            iou = (mine & ref_mask).sum() / max(1, (mine | ref_mask).sum())
            assert iou >= 0.6, (seed, iou)
            compared += 1
    assert compared >= 3


def test_panoptic_equals_transformers_at_one_to_one(tmp_path):
    """Masks at the input's size (stride 1) and an image of the network size: every step is the reference's."""
    src = query_onnx(tmp_path / "m.onnx", q=10, stride=1, seed=5)
    b = import_onnx(src, tmp_path / "pan", task="panoptic", classes=NAMES, things=["person", "car"], input_spec=SPEC)
    opts = b.manifest.decoder_options
    assert (opts.layout, opts.query_convention, opts.score_threshold, opts.stuff_area) == ("query", "transformers", 0.5, 0)
    pred = edgeseg.load(b.root, backend="onnxruntime")
    segments = 0
    for seed in range(4):
        img = _image(seed, 64, 64)
        proc, out = _hf(_raw(src, img, SPEC))
        r = proc.post_process_panoptic_segmentation(out, threshold=0.5, label_ids_to_fuse={0, 1})[0]
        ref = r["segmentation"].numpy()
        res = pred(img)
        label = {s["id"]: s["label_id"] for s in r["segments_info"]}
        ref_cls = np.vectorize(lambda i: label.get(int(i), -1))(ref)
        cls = {s.id: s.category_id for s in res.segments}
        got_cls = np.vectorize(lambda i: cls.get(int(i), -1))(res.segment_ids)
        assert (ref_cls == got_cls).all(), seed
        pairs = np.unique(np.stack([ref.ravel(), res.segment_ids.ravel()]), axis=1)  # one segment for one segment
        assert len(set(pairs[0])) == len(set(pairs[1])) == pairs.shape[1]
        segments += len(res.segments)
    assert segments >= 4


def test_detectron2_names_take_its_convention_and_hidden_states_are_left_out(tmp_path):
    src = query_onnx(tmp_path / "d2.onnx", names=("pred_logits", "pred_masks"), hidden=32)
    b = import_onnx(src, tmp_path / "pan", task="panoptic", classes=NAMES, things=["car"], input_spec=SPEC)
    opts = b.manifest.decoder_options
    assert (opts.query_convention, opts.score_threshold, opts.mask_area_ratio) == ("mask2former", 0.8, 0.8)
    assert b.manifest.provenance["original_outputs"] == {"class_logits": "pred_logits", "mask_logits": "pred_masks"}
    res = edgeseg.load(b.root)(_image(0, 80, 120))  # another size and aspect: resized, decoded, mapped back
    assert res.segment_ids.shape == (80, 120)


def test_instance_options_follow_the_convention_and_things_drop_stuff(tmp_path):
    src = query_onnx(tmp_path / "m.onnx", q=12, seed=3)
    b = import_onnx(src, tmp_path / "hf", task="instance", classes=NAMES, input_spec=None)
    o = b.manifest.decoder_options
    assert (o.score_threshold, o.max_detections, b.report["import"]["query_convention"]) == (0.5, 12, "transformers")
    b = import_onnx(src, tmp_path / "d2", task="instance", classes=NAMES, input_spec=None,
                    query_options={"query_convention": "mask2former"})
    o = b.manifest.decoder_options
    assert (o.score_threshold, o.max_detections) == (0.0, 100)  # the best 100 pairs (12 x 4 = 48 here), no threshold
    assert [o.shape for o in b.manifest.outputs][0] == (1, 48)
    every = edgeseg.load(b.root, backend="onnxruntime")(_image(0, 64, 64))
    assert set(every.classes.tolist()) == {0, 1, 2, 3} and len(every) == 48
    things = import_onnx(src, tmp_path / "th", task="instance", classes=NAMES, input_spec=None, things=["person", "car"],
                         query_options={"query_convention": "mask2former", "score_threshold": 0.0})
    kept = edgeseg.load(things.root, backend="onnxruntime")(_image(0, 64, 64))
    # the same pairs, those of stuff classes dropped: the authors' panoptic_on filter after the top-k
    assert set(kept.classes.tolist()) == {2, 3}
    want = sorted(float(s) for s, c in zip(every.scores, every.classes) if c in (2, 3))
    assert np.allclose(sorted(kept.scores.tolist()), want)


def test_auxiliary_outputs_and_known_names(tmp_path):
    from edgeseg.export.import_query import semantic_size

    arrays = {"class_queries_logits": np.zeros((1, 8, 5), np.float32), "masks_queries_logits": np.zeros((1, 8, 4, 4), np.float32),
              "auxiliary_logits.0.class_queries_logits": np.zeros((1, 8, 5), np.float32),
              "auxiliary_logits.0.masks_queries_logits": np.zeros((1, 8, 4, 4), np.float32),
              "transformer_decoder_last_hidden_state": np.zeros((1, 8, 5), np.float32)}
    q = detect_query_outputs(arrays, None, "m.onnx")
    assert (q.classes, q.masks, q.num_classes) == ("class_queries_logits", "masks_queries_logits", 4)
    arrays = {"aux_cls": np.zeros((1, 8, 5), np.float32), "aux_mask": np.zeros((1, 8, 4, 4), np.float32),
              "cls": np.zeros((1, 8, 5), np.float32), "seg_mask": np.zeros((1, 8, 4, 4), np.float32)}
    q = detect_query_outputs(arrays, 4, "m.onnx")
    assert (q.classes, q.masks) == ("cls", "seg_mask")
    # 200 queries at 1024x2048 would hold 1.7 GB per tensor: the semantic graph resizes to less
    big = detect_query_outputs({"pred_logits": np.zeros((1, 200, 20), np.float32),
                                "pred_masks": np.zeros((1, 200, 256, 512), np.float32)}, 19, "m.onnx")
    h, w = semantic_size(big, edgeseg.structures.ImageShape(1024, 2048))
    assert 200 * h * w <= 1 << 26 and abs(w / h - 2) < 0.01 and h >= 256
    assert semantic_size(big, edgeseg.structures.ImageShape(256, 512)) is None


def test_semantic_masks_resized_below_the_input_when_it_is_too_big(tmp_path, monkeypatch):
    import edgeseg.export.import_query as iq

    monkeypatch.setattr(iq, "SEMANTIC_MAX_VALUES", 8 * 32 * 32)  # 8 queries: at most 32x32 instead of 64x64
    src = query_onnx(tmp_path / "m.onnx")
    b = import_onnx(src, tmp_path / "sem", task="semantic", classes=NAMES, input_spec=SPEC)
    assert b.manifest.outputs[0].shape == (1, 4, 32, 32)
    img = _image(0, 64, 64)
    ref = authors_semantic(_raw(src, img, SPEC), (64, 64), (64, 64))
    assert (edgeseg.load(b.root, backend="onnxruntime")(img).labels == ref).mean() >= 0.95


def test_cli_query_options(tmp_path, capsys):
    from edgeseg.bundle import Bundle
    from edgeseg.cli import main

    src = query_onnx(tmp_path / "m.onnx")
    base = ["import", str(src), "--names", ",".join(NAMES), "--size", "64x64"]
    assert main(base + ["--task", "panoptic", "--things", "car", "--query-convention", "maskformer", "--score-threshold",
                        "0.7", "--out", str(tmp_path / "p")]) == 0
    o = Bundle.open(tmp_path / "p").manifest.decoder_options
    assert (o.query_convention, o.score_threshold, o.thing_classes) == ("maskformer", 0.7, (3,))
    assert main(base + ["--query-convention", "maskformer", "--out", str(tmp_path / "s")]) != 0
    assert "apply to --task panoptic or instance" in capsys.readouterr().err
    assert main(base + ["--task", "instance", "--things", "car,person", "--out", str(tmp_path / "i")]) == 0
    assert Bundle.open(tmp_path / "i").report["import"]["things"] == [2, 3]
    from edgeseg.errors import InputError
    from edgeseg.export.import_query import require_opset

    with pytest.raises(ExportError, match="needs opset 13 or newer"):
        require_opset(12, src)
    with pytest.raises(InputError, match="query_convention must be one of"):
        import_onnx(src, tmp_path / "x", task="panoptic", classes=NAMES, things=["car"], input_spec=SPEC,
                    query_options={"query_convention": "detectron3"})


def test_review_cases(tmp_path):
    """What a review of the first version found: INT8 of the appended semantic head, a dynamic batch, outputs
    shape inference cannot reach, other families' outputs taken for queries, the confidence of class sums."""
    import onnx

    from edgeseg.quant.profiles import get_profile
    from edgeseg.quant.quantize import plan_float_nodes
    from edgeseg.serve.batching import infer_batch

    # the appended post-processing stays float (INT8 rounded small class sums to 0)
    sem = import_onnx(query_onnx(tmp_path / "m.onnx"), tmp_path / "sem", task="semantic", classes=NAMES, input_spec=SPEC)
    model = onnx.load(str(sem.root / "model.onnx"))
    appended = {n.name for n in model.graph.node if n.name.startswith("edgeseg_query_")}
    floats = {f.name for f in plan_float_nodes(model, get_profile("cpu"))}
    assert {"Einsum", "Sigmoid", "Resize"} <= {n.op_type for n in model.graph.node if n.name in appended}
    assert appended <= floats
    # the confidence of class sums is the chosen class's share of them
    assert sem.manifest.decoder_options.scores == "probabilities"
    res = edgeseg.load(sem.root, backend="onnxruntime").set_options(confidence=True)(_image(0, 64, 64))
    assert 0.25 <= res.confidence.min() and res.confidence.max() <= 1.0

    # a dynamic batch: instance bundles take one frame at a time (the top-k flattens [1, Q*C]); batching splits
    dyn = query_onnx(tmp_path / "dyn.onnx", batch="N", seed=3)
    inst = import_onnx(dyn, tmp_path / "inst", task="instance", classes=NAMES, input_spec=None)
    assert not inst.manifest.input.dynamic_batch
    with edgeseg.load(inst.root, backend="onnxruntime") as pred:
        one = pred(_image(1, 64, 64))
        both = infer_batch(pred, [_image(1, 64, 64), _image(1, 64, 64)])
    assert [len(r) for r in both] == [len(one)] * 2 and np.allclose(both[1].scores, one.scores)
    pan = import_onnx(dyn, tmp_path / "pan", task="panoptic", classes=NAMES, things=["car"], input_spec=SPEC)
    with edgeseg.load(pan.root, backend="onnxruntime") as pred:
        assert len(infer_batch(pred, [_image(1, 64, 64)] * 3)) == 3

    # a com.microsoft op before the outputs: no shapes for them, the bundle is written all the same and decodes
    # the file's own outputs (its raw outputs in ONNX Runtime, decoded with the bundle's manifest)
    from edgeseg.decode import decode

    contrib = query_onnx(tmp_path / "contrib.onnx", contrib=True)
    img = _image(2, 64, 64)
    raw = _raw(contrib, img, SPEC)
    for task in ("instance", "panoptic", "semantic"):
        b = import_onnx(contrib, tmp_path / f"c-{task}", task=task, classes=NAMES, things=["car"] if task == "panoptic" else None,
                        input_spec=None if task == "instance" else SPEC)
        got = edgeseg.load(b.root, backend="onnxruntime")(img)
        if task == "panoptic":
            _, meta = b.manifest.input.preprocess(img)
            want = decode({"class_logits": raw["class_queries_logits"], "mask_logits": raw["masks_queries_logits"]},
                          meta, b.manifest)
            np.testing.assert_array_equal(got.segment_ids, want.segment_ids)
            assert [(s.category_id, s.score) for s in got.segments] == [(s.category_id, s.score) for s in want.segments]
        elif task == "semantic":
            np.testing.assert_array_equal(got.labels, authors_semantic(raw, (64, 64), (64, 64)))
        else:  # transformers' instance post-processing of the same outputs (threshold 0.5, its default)
            proc, out = _hf(raw)
            ref = proc.post_process_instance_segmentation(out, threshold=0.5, target_sizes=[(64, 64)])[0]
            want = sorted((s["label_id"], s["score"]) for s in ref["segments_info"])
            mine = sorted((int(c), float(v)) for c, v in zip(got.classes, got.scores))
            assert want and [c for c, _ in mine] == [c for c, _ in want]
            assert np.allclose([v for _, v in mine], [v for _, v in want], atol=1e-4)

    # DeepLab2's squeezed heatmap beside channels-last logits is no query pair
    maps = {"semantic": np.zeros((1, 128, 20, 19), np.float32), "center": np.zeros((1, 128, 20), np.float32),
            "offset": np.zeros((1, 128, 20, 2), np.float32)}
    assert detect_query_outputs(maps, 19, "pdl.onnx") is None


def test_query_options_on_a_panoptic_deeplab_are_refused(tmp_path):
    from edgeseg.bundle import Bundle
    from edgeseg.errors import InputError

    from .test_import_panoptic import _foreign

    shipped = Bundle.open("shapes-panoptic")
    src = tmp_path / "pdl.onnx"
    _foreign(shipped.root / "model.onnx", src, False, False)
    with pytest.raises(InputError, match="score_threshold apply to mask-classification models"):
        import_onnx(src, tmp_path / "p", task="panoptic", classes=shipped.manifest.classes, things=["circle"],
                    input_spec=InputSpec(size=(120, 160)), query_options={"score_threshold": 0.5})
    assert not (tmp_path / "p").exists()


def test_outputs_that_do_not_fit_are_named(tmp_path):
    src = query_onnx(tmp_path / "m.onnx")
    with pytest.raises(ExportError, match=r"scores 4 classes plus no-object, but 3 classes were given.*class_queries_logits"):
        import_onnx(src, tmp_path / "x", task="semantic", classes=("a", "b", "c"), input_spec=SPEC)
    assert not (tmp_path / "x").exists()
    two = {"a_class": np.zeros((1, 8, 5), np.float32), "b_class": np.zeros((1, 8, 5), np.float32),
           "m": np.zeros((1, 8, 4, 4), np.float32)}
    with pytest.raises(ExportError, match="several output pairs"):
        detect_query_outputs(two, 4, "m.onnx")
    assert detect_query_outputs({"logits": np.zeros((1, 4, 8, 8), np.float32)}, 4, "m.onnx") is None


def _hf_folder(tmp_path, **pre):
    """An export folder as optimum or save_pretrained leave it: model.onnx, config.json, preprocessor_config.json."""
    import json

    folder = tmp_path / "export"
    folder.mkdir()
    query_onnx(folder / "model.onnx", size=64)
    (folder / "config.json").write_text(json.dumps({"model_type": "mask2former", "id2label": {
        str(i): n for i, n in enumerate(NAMES)}, "label2id": {n: i for i, n in enumerate(NAMES)}}))
    (folder / "preprocessor_config.json").write_text(json.dumps({
        "do_normalize": True, "do_rescale": True, "do_resize": True, "image_mean": [0.5, 0.5, 0.5],
        "image_std": [0.25, 0.25, 0.25], "rescale_factor": 0.00392156862745098, "size": {"height": 64, "width": 64},
        "image_processor_type": "Mask2FormerImageProcessor", **pre}))
    return folder


def test_cli_reads_a_hugging_face_exports_names_and_preprocessing(tmp_path, capsys, caplog):
    import json

    from edgeseg.bundle import Bundle
    from edgeseg.cli import main

    folder = _hf_folder(tmp_path)
    out = tmp_path / "pan.edgeseg"
    assert main(["import", str(folder / "model.onnx"), "--task", "panoptic", "--things", "person,car", "--out", str(out)]) == 0
    m = Bundle.open(out).manifest
    assert m.classes == NAMES and m.decoder_options.thing_classes == (2, 3)
    assert (m.input.mean, m.input.std, m.input.scale) == ((0.5, 0.5, 0.5), (0.25, 0.25, 0.25), pytest.approx(1 / 255))
    assert "4 class names" in caplog.text and "preprocessor_config.json" in caplog.text
    # what the command line gives wins, field by field
    assert main(["import", str(folder / "model.onnx"), "--names", "a,b,c,d", "--std", "1,1,1", "--out",
                 str(tmp_path / "sem.edgeseg")]) == 0
    m = Bundle.open(tmp_path / "sem.edgeseg").manifest
    assert m.classes == ("a", "b", "c", "d") and m.input.std == (1.0, 1.0, 1.0) and m.input.mean == (0.5, 0.5, 0.5)
    # instance imports too (the exporter's convention replaced by the processor's fields)
    assert main(["import", str(folder / "model.onnx"), "--task", "instance", "--out", str(tmp_path / "i.edgeseg")]) == 0
    m = Bundle.open(tmp_path / "i.edgeseg").manifest
    assert m.classes == NAMES and m.input.mean == (0.5, 0.5, 0.5) and m.input.resize == "resize"
    # letterboxed, it pads as transformers' processor pads (0 after normalising): the processor's mean pixel
    assert main(["import", str(folder / "model.onnx"), "--task", "instance", "--resize", "letterbox",
                 "--out", str(tmp_path / "l.edgeseg")]) == 0
    i = Bundle.open(tmp_path / "l.edgeseg").manifest.input
    assert (i.resize, i.anchor, i.pad_value) == ("letterbox", "top-left", 128)  # 0.5 * 255 = 127.5 -> 128
    # a broken id2label is named when the names are needed, and only then
    (folder / "config.json").write_text(json.dumps({"id2label": {"0": "road", "2": "car"}}))
    capsys.readouterr()
    assert main(["import", str(folder / "model.onnx"), "--out", str(tmp_path / "x.edgeseg")]) != 0
    err = capsys.readouterr().err
    assert "config.json: id2label does not name classes 0..n-1" in err and not (tmp_path / "x.edgeseg").exists()
    assert main(["import", str(folder / "model.onnx"), "--classes", "4", "--out", str(tmp_path / "y.edgeseg")]) == 0
    # an instance import does not need them (placeholders, with a warning); a broken processor file is a warning
    (folder / "preprocessor_config.json").write_text("{not json")
    caplog.clear()
    assert main(["import", str(folder / "model.onnx"), "--task", "instance", "--out", str(tmp_path / "z.edgeseg")]) == 0
    assert "preprocessor_config.json: not a readable JSON file" in caplog.text and "(not used)" in caplog.text
    assert Bundle.open(tmp_path / "z.edgeseg").manifest.classes == ("class0", "class1", "class2", "class3")


def test_hugging_face_files_are_not_applied_to_other_instance_models(tmp_path, caplog):
    """A config.json and preprocessor_config.json beside a YOLACT export (a folder shared with other files):
    its names and normalisation stay YOLACT's (--preprocess yolact, or the recognised outputs)."""
    import shutil

    from edgeseg.bundle import Bundle
    from edgeseg.cli import main
    from edgeseg.export.import_yolact import YOLACT_INPUT

    from .test_import_instance import _TinyYolact

    folder = _hf_folder(tmp_path)
    (folder / "model.onnx").unlink()
    _TinyYolact.export(folder / "yolact.onnx", False)
    for extra in ([], ["--preprocess", "yolact"]):
        out = tmp_path / f"y{len(extra)}.edgeseg"
        assert main(["import", str(folder / "yolact.onnx"), "--task", "instance", *extra, "--out", str(out)]) == 0
        m = Bundle.open(out).manifest
        assert m.input.mean == pytest.approx(YOLACT_INPUT["mean"]) and m.classes[0] == "class0"
    shutil.rmtree(folder)


def test_hugging_face_config_fields(tmp_path):
    from edgeseg.export.hf_config import huggingface_config
    from edgeseg.structures import ImageShape

    assert huggingface_config(query_onnx(tmp_path / "alone.onnx")) is None
    folder = _hf_folder(tmp_path, do_normalize=False, do_rescale=False, size={"shortest_edge": 800})
    hf = huggingface_config(folder / "model.onnx")
    assert hf.names == NAMES and hf.model_type == "mask2former"
    assert hf.input == {"mean": (0.0, 0.0, 0.0), "std": (1.0, 1.0, 1.0), "scale": 1.0}  # no fixed size to take
    (folder / "preprocessor_config.json").write_text('{"size": {"height": 512, "width": 1024}, "image_mean": 0.5}')
    hf = huggingface_config(folder / "model.onnx")
    assert hf.input["size"] == ImageShape(512, 1024) and hf.input["mean"] == (0.5, 0.5, 0.5)
    # what transformers would not write is left out, with the reason; names as a list are names
    (folder / "preprocessor_config.json").write_text('{"image_mean": [0.5, 0.5], "image_std": [0.2], "do_rescale": "false",'
                                                     ' "do_normalize": "maybe", "size": {"height": 0, "width": 9}}')
    (folder / "config.json").write_text('{"id2label": ["road", "sky"]}')
    hf = huggingface_config(folder / "model.onnx")
    assert hf.names == ("road", "sky") and hf.names_error is None
    assert hf.input == {"std": (0.2, 0.2, 0.2), "scale": 1.0}
    assert any("image_mean" in p for p in hf.problems) and any("do_normalize" in p for p in hf.problems)
    assert any("size" in p for p in hf.problems)
    (folder / "config.json").write_text('[1, 2]')
    hf = huggingface_config(folder / "model.onnx")
    assert hf.names is None and "a JSON object was expected" in hf.names_error


# ---- real transformers exports (tools/fixtures/make_query_models.py: tiny seeded models, torch.onnx.export) ----
FIXTURES = __import__("pathlib").Path(__file__).resolve().parents[1] / "fixtures" / "query"
M2F, MF = FIXTURES / "mask2former_tiny.onnx", FIXTURES / "maskformer" / "maskformer_tiny.onnx"
HF_NAMES = ("road", "sky", "building", "person", "car", "bicycle")


def _street(h: int, w: int) -> np.ndarray:
    """The fixtures' own test picture (make_query_models.py), scaled to ``h x w``: sky, buildings, road and two boxes."""
    img = np.zeros((h, w, 3), np.uint8)
    y = lambda v: int(v * h / 256)  # noqa: E731
    x = lambda v: int(v * w / 256)  # noqa: E731
    img[:y(96)] = (135, 206, 235)
    img[y(96):y(160)] = (150, 80, 60)
    img[y(160):] = (90, 90, 90)
    img[y(120):y(220), x(40):x(100)] = (220, 30, 30)
    img[y(180):y(240), x(150):x(230)] = (30, 30, 200)
    return img


def _raw_fixture(path, image, spec):
    import onnxruntime as ort

    x, _ = spec.preprocess(image)
    s = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    return SimpleNamespace(**{o.name: torch.from_numpy(y) for o, y in zip(s.get_outputs(), s.run(None, {"pixel_values": x}))})


def _cli_import(path, out, *args) -> "edgeseg.Predictor":
    from edgeseg.cli import main

    assert main(["import", str(path), "--out", str(out), *args]) == 0
    return edgeseg.load(out, backend="onnxruntime")  # the reference runs the file in ONNX Runtime too


def test_maskformer_export_equals_transformers_post_processing(tmp_path):
    """MaskFormer's processor decides at its masks' size: an image of that size (64x64, masks at 1/4 of the
    256x256 input) makes edgeseg's grid the image, so its panoptic output is transformers' own; the semantic
    output is the authors' inference's (at the network's size, where no resize of the labels intervenes)."""
    import cv2
    from transformers.models.maskformer.image_processing_pil_maskformer import MaskFormerImageProcessorPil

    proc = MaskFormerImageProcessorPil.from_pretrained(str(MF.parent))
    pan = _cli_import(MF, tmp_path / "p.edgeseg", "--task", "panoptic", "--things", "person,car,bicycle")
    sem = _cli_import(MF, tmp_path / "s.edgeseg")
    m = pan.manifest
    assert m.classes == HF_NAMES and m.decoder_options.query_convention == "transformers"
    segments = 0
    for img in (_street(64, 64), _image(5, 64, 64)):
        raw = _raw_fixture(MF, img, m.input)
        r = proc.post_process_panoptic_segmentation(raw, threshold=0.5, label_ids_to_fuse={0, 1, 2})[0]
        res = pan(img)
        ref = r["segmentation"].numpy()
        label = {s["id"]: s["label_id"] for s in r["segments_info"]}
        cls = {s.id: s.category_id for s in res.segments}
        assert (np.vectorize(lambda i: label.get(int(i), -1))(ref) ==
                np.vectorize(lambda i: cls.get(int(i), -1))(res.segment_ids)).all()
        pairs = np.unique(np.stack([ref.ravel(), res.segment_ids.ravel()]), axis=1)
        assert len(set(pairs[0])) == len(set(pairs[1])) == pairs.shape[1]
        segments += len(res.segments)
        big = cv2.resize(img, (256, 256), interpolation=cv2.INTER_LINEAR)  # the network's size: no resize
        raw = _raw_fixture(MF, big, m.input)
        ref_sem = authors_semantic({k: getattr(raw, k) for k in ("class_queries_logits", "masks_queries_logits")},
                                   (256, 256), (256, 256))
        assert (sem(big).labels == ref_sem).mean() >= 0.999 and len(np.unique(ref_sem)) >= 2
    assert segments >= 4


def test_mask2former_export_imports_for_the_three_tasks(tmp_path):
    """Mask2Former's post-processing first resizes every mask to 384x384 and decides there (at the target size
    when given); edgeseg decides on the 64x64 mask grid and maps it to the image: the same segments, with
    boundaries that differ by up to a grid cell."""
    from transformers.models.mask2former.image_processing_pil_mask2former import Mask2FormerImageProcessorPil

    proc = Mask2FormerImageProcessorPil.from_pretrained(str(M2F.parent))
    img = _street(256, 256)
    sem = _cli_import(M2F, tmp_path / "s.edgeseg")
    raw = _raw_fixture(M2F, img, sem.manifest.input)
    ref = proc.post_process_semantic_segmentation(raw, target_sizes=[(256, 256)])[0].numpy()
    # transformers resizes the mask logits to 384x384 before the sigmoid, the authors' code (and edgeseg) to
    # the input's 256x256: the same order, so nearly the same labels (the sigmoid first would give 95.5 %)
    assert (sem(img).labels == ref).mean() >= 0.99 and len(np.unique(ref)) >= 3

    pan = _cli_import(M2F, tmp_path / "p.edgeseg", "--task", "panoptic", "--things", "person,car,bicycle")
    r = proc.post_process_panoptic_segmentation(raw, threshold=0.5, label_ids_to_fuse={0, 1, 2},
                                                target_sizes=[(256, 256)])[0]
    res = pan(img)
    ref_ids = r["segmentation"].numpy()
    matched = 0
    for s in {s["id"]: s for s in r["segments_info"]}.values():
        area = ref_ids == s["id"]
        ious = [((res.segment_ids == e.id) & area).sum() / ((res.segment_ids == e.id) | area).sum()
                for e in res.segments if e.category_id == s["label_id"]]
        matched += bool(ious) and max(ious) >= 0.5
    assert len(r["segments_info"]) >= 3 and matched >= len({s["id"] for s in r["segments_info"]}) - 1

    inst = _cli_import(M2F, tmp_path / "i.edgeseg", "--task", "instance")
    assert inst.manifest.input.mean == pytest.approx((0.485, 0.456, 0.406))  # its preprocessor_config.json
    inst.set_options(score_threshold=0.3)
    r = proc.post_process_instance_segmentation(raw, threshold=0.3, target_sizes=[(256, 256)], return_binary_maps=True)[0]
    got = inst(img)
    want = sorted((s["label_id"], round(s["score"], 2)) for s in r["segments_info"])
    assert len(want) >= 2
    # the class probabilities are the same; the mask score (the mean probability over the mask) is taken at
    # 384x384 there and on the 64x64 mask grid here (the authors' code: at the image's size), so the scores
    # differ by a few hundredths on this model's sharp masks
    assert sorted(int(c) for c in got.classes) == sorted(c for c, _ in want)
    diff = np.abs(np.sort(got.scores) - np.sort([s for _, s in want]))
    assert diff.max() <= 0.06 and np.median(diff) <= 0.02, diff


def test_box_and_mask_outputs_with_float_labels_stay_box_and_mask():
    """MMDeploy's dets [1, K, 5] with float labels and masks [1, K, h, w] fit the query pattern when the model has 4
    classes: the box-and-mask detection, which recognises them, runs first (import_instance_onnx)."""
    from edgeseg.export.import_boxmask import detect_boxmask_layout
    from edgeseg.structures import ImageShape

    rng = np.random.default_rng(0)
    dets = np.concatenate([rng.uniform(0, 30, (1, 6, 4)), rng.uniform(0, 1, (1, 6, 1))], axis=2).astype(np.float32)
    dets[..., 2:4] += 30
    arrays = {"dets": dets, "labels": np.array([[0, 1, 2, 3, 0, 1]], np.float32),
              "masks": rng.uniform(0, 1, (1, 6, 28, 28)).astype(np.float32)}
    assert detect_query_outputs(arrays, 4, "m.onnx") is not None  # the shapes alone would be a query model's
    assert detect_boxmask_layout(arrays, ImageShape(64, 64), "m.onnx") is not None


def test_a_task_token_input_is_named_as_oneformer_s(tmp_path):
    """OneFormer's network takes a tokenised task text beside the image: refused with how to fix the task."""
    import onnx
    from onnx import TensorProto as T
    from onnx import helper as h

    src = query_onnx(tmp_path / "m.onnx")
    m = onnx.load(str(src))
    m.graph.input.append(h.make_tensor_value_info("task_inputs", T.INT64, [1, 77]))
    onnx.save(m, str(tmp_path / "oneformer.onnx"))
    with pytest.raises(ExportError, match="task token input \\(OneFormer\\) is not supported") as e:
        import_onnx(tmp_path / "oneformer.onnx", tmp_path / "x", task="panoptic", classes=NAMES, things=["car"],
                    input_spec=SPEC)
    assert "task fixed inside the graph" in e.value.fix
