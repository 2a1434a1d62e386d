"""Instance models made elsewhere -> a bundle: the prototype-mask layout (Ultralytics YOLOv5/v8/v11-seg
and YOLO26-seg exports; YOLACT's own outputs are rewritten into it first by
:mod:`edgeseg.export.import_yolact`).

Recognised from the output shapes of one run on a test frame: a rank-4 output ``[1, nm, h, w]`` is
the prototypes; a rank-3 output holds ``F`` features for each of ``N`` anchors, as ``[1, F, N]``
(Ultralytics' layout) or ``[1, N, F]``, with ``F = 4 + nc + nm`` (YOLOv8/v11: box ``cx, cy, w, h``
in network pixels, ``nc`` class scores, ``nm`` mask coefficients) or ``F = 5 + nc + nm`` (YOLOv5:
an objectness score after the box). ``nc`` comes from the class names: Ultralytics' ONNX metadata
(``names``, also ``imgsz`` and ``stride``) or ``--classes`` / ``--names``. The anchor axis is the
one equal to the anchor count of the input size (``sum (H/s)(W/s)`` over strides 8, 16, 32 (to 64 when the
metadata's ``stride`` says so: the P6 variants), times 3
for YOLOv5), which tells ``[1, F, N]`` from ``[1, N, F]`` even when ``F`` and ``N`` are close.

End-to-end exports (YOLO26-seg's default, and YOLOv8/v11 exported with ``nms=True``) give
``[1, K, 6 + nm]`` instead: ``K`` final detections (``max_det``, 300 by default) of ``x1, y1, x2,
y2, score, class id`` and the coefficients, duplicates already removed in the graph. They are
recognised by the metadata's ``end2end`` flag (Ultralytics writes it) or, without it, by a
detection count that is no anchor count of the input size; their class count is not in the shapes,
so it comes from the metadata's names or ``--classes``.

Pre-processing of an Ultralytics export is reproduced exactly: letterbox to the export size,
centred, pad value 114, RGB, ``pixel / 255`` (no mean/std), as ``ultralytics.data.augment.LetterBox``
and the exporter's predictor do.
"""
from __future__ import annotations

import ast
import dataclasses
import functools
import logging
import os
from collections.abc import Sequence
from pathlib import Path

import numpy as np

from ..bundle import Bundle
from ..errors import ExportError, InputError
from ..structures import ImageShape, InputSpec, InstanceOptions, pad_levels
from ..structures.manifest import Manifest, OutputSpec
from .graph import clean_graph, fresh_node_name
from .import_yolact import YOLACT_INPUT, detect_yolact_layout, yolact_to_prototype

log = logging.getLogger(__name__)

#: Ultralytics' pre-processing: letterbox (centred, grey 114), RGB, pixel / 255.
ULTRALYTICS_INPUT = dict(resize="letterbox", pad_value=114, anchor="center", color="RGB", mean=(0.0, 0.0, 0.0), std=(1.0, 1.0, 1.0),
                         scale=1.0 / 255.0)


def onnx_metadata(model) -> dict[str, str]:
    return {p.key: p.value for p in model.metadata_props}


def ultralytics_names(meta: dict[str, str]) -> tuple[str, ...] | None:
    """Class names from Ultralytics' ``names`` metadata (a Python dict literal ``{0: 'person', ...}``)."""
    text = meta.get("names")
    if not text:
        return None
    try:
        names = ast.literal_eval(text)
    except (ValueError, SyntaxError, TypeError, MemoryError, RecursionError):
        return None
    if isinstance(names, dict):
        if all(isinstance(k, str) and k.strip().isdigit() for k in names):  # {'0': 'a', '10': 'k'}: by number
            names = {int(k): v for k, v in names.items()}
        if not all(isinstance(k, int) and not isinstance(k, bool) for k in names):  # {0: 'a', 'x': 'b'}: unsortable
            return None
        return tuple(str(names[k]) for k in sorted(names))
    if isinstance(names, (list, tuple)):
        return tuple(str(n) for n in names)
    return None


def ultralytics_imgsz(meta: dict[str, str]) -> ImageShape | None:
    try:
        v = ast.literal_eval(meta.get("imgsz", ""))
    except (ValueError, SyntaxError, TypeError, MemoryError, RecursionError):
        return None
    hw = (v, v) if isinstance(v, int) else tuple(v) if isinstance(v, (list, tuple)) and len(v) == 2 else None
    if hw is None or not all(isinstance(x, int) and not isinstance(x, bool) and 0 < x <= 1 << 16 for x in hw):
        return None  # [None, None] (a dynamic export), [0, 0], ['a', 'b']: no size from the metadata
    return ImageShape(*hw)


def is_ultralytics(meta: dict[str, str]) -> bool:
    return meta.get("author", "").lower().startswith("ultralytics") or meta.get("task") == "segment"


#: what each Ultralytics task is in edgeseg's terms (the ``task`` metadata of an Ultralytics export)
ULTRALYTICS_TASKS = {"semantic": "semantic", "segment": "instance"}


def _file_metadata(path: str) -> dict[str, str] | None:
    """An ONNX file's metadata, parsed once per file version (the CLI and the import both ask; a large export takes
    a second to parse); None when the file cannot be read (the import reports that with its own message)."""
    try:
        st = os.stat(path)
    except OSError:
        return None
    return _metadata_of(path, st.st_mtime_ns, st.st_size)


@functools.lru_cache(maxsize=8)
def _metadata_of(path: str, mtime_ns: int, size: int) -> dict[str, str] | None:
    import onnx

    try:
        return onnx_metadata(onnx.load(path, load_external_data=False))
    except Exception:  # noqa: BLE001 - unreadable files are the import's to report, with its own message
        return None


def ultralytics_task(path) -> str | None:
    """The Ultralytics task (``segment``, ``semantic``, ``detect``, ...) an export's metadata names; None for a file
    without Ultralytics' metadata."""
    meta = _file_metadata(str(path))
    if meta is None or not meta.get("author", "").lower().startswith("ultralytics"):
        return None
    return meta.get("task") or None


def ultralytics_semantic(path) -> dict | None:
    """For an Ultralytics semantic segmentation export (YOLO26-sem: ``task`` metadata ``semantic``): its class
    names, network size and pre-processing (letterbox, centred, grey 114, RGB, /255, as its predictor does), as
    ``{"names", "size", "input", "exporter"}`` (one name: a binary model, whose predictor labels the class where its one logit is
    above 0, the rest background); None for a file without Ultralytics' metadata (or one that cannot be read:
    the import says why). An Ultralytics export of another task is refused with the task to import it as."""
    meta = _file_metadata(str(path))
    if meta is None or not meta.get("author", "").lower().startswith("ultralytics") or not meta.get("task"):
        return None
    task = meta["task"]
    if task != "semantic":
        fix = (f"import it with --task {ULTRALYTICS_TASKS[task]}" if task in ULTRALYTICS_TASKS else
               "edgeseg imports Ultralytics' segment (instance) and semantic models")
        raise InputError(f"{path} is an Ultralytics {task} model, not a semantic segmentation one", fix=fix)
    return {"names": ultralytics_names(meta), "size": ultralytics_imgsz(meta), "input": dict(ULTRALYTICS_INPUT),
            "exporter": {k: meta[k] for k in ("author", "version", "task", "imgsz", "stride") if k in meta}}


def anchor_count(size: ImageShape, strides: Sequence[int] = (8, 16, 32), per_cell: int = 1) -> int:
    return per_cell * sum(-(-size.height // s) * -(-size.width // s) for s in strides)


def head_strides(meta: dict[str, str]) -> tuple[int, ...]:
    """The head's strides from Ultralytics' ``stride`` metadata (the largest: 32 for P3-P5 heads, 64 for the
    P6 variants), doubling from 8; (8, 16, 32) when it is absent or unreadable."""
    try:
        top = int(float(str(meta.get("stride", "32")).strip("[]() ").split(",")[-1]))
    except (ValueError, OverflowError):  # "inf", "1e400"
        return (8, 16, 32)
    if top < 16 or top > 256 or top & (top - 1):  # not a power of two: not a stride Ultralytics writes
        return (8, 16, 32)
    strides, s = [], 8
    while s <= top:
        strides.append(s)
        s *= 2
    return tuple(strides)


def _layout_fail(shapes: dict[str, tuple[int, ...]], where: str, why: str) -> ExportError:
    listing = ", ".join(f"{k} {list(v)}" for k, v in shapes.items())
    return ExportError(f"{where}: outputs ({listing}) are not a prototype-mask instance layout: {why}",
                       fix="expected [1, 4+nc+nm, N] (or [1, N, 4+nc+nm]) detections, or end-to-end [1, K, 6+nm] "
                           "ones, and [1, nm, h, w] prototypes, or YOLACT's conf/boxes/mask/proto outputs; pass "
                           "--classes N if the class count is not in the model's metadata")


def detect_prototype_layout(shapes: dict[str, tuple[int, ...]], nc: int | None, net: ImageShape,
                            where: str, end2end: bool | None = None,
                            strides: Sequence[int] = (8, 16, 32)) -> tuple[str, str, str, int, int]:
    """``(detections name, prototypes name, format, nc, nm)`` from the outputs' shapes, or an
    :class:`ExportError` naming every output and its shape. ``end2end``: the exporter's own word
    (Ultralytics' ``end2end`` metadata) when there is one. ``strides``: the head's (:func:`head_strides`)."""
    def fail(why: str) -> ExportError:
        return _layout_fail(shapes, where, why)

    protos = [k for k, s in shapes.items() if len(s) == 4]
    dets = [k for k, s in shapes.items() if len(s) == 3]
    if len(protos) != 1 or len(dets) != 1:
        raise fail("need exactly one rank-3 and one rank-4 output")
    p, d = shapes[protos[0]], shapes[dets[0]]
    if p[0] != 1 or d[0] != 1:
        raise fail("batch must be 1")
    nm = int(p[1])
    anchors = {anchor_count(net, strides), anchor_count(net, strides, per_cell=3)}
    e2e_axis = [a for a in (2, 1) if int(d[a]) == 6 + nm and int(d[3 - a]) not in anchors]
    if e2e_axis and end2end is not False:  # a raw head has one row per anchor; end-to-end ones have max_det
        if nc is None:
            raise fail("end-to-end detections carry class ids, not one score per class: the class count is unknown")
        return dets[0], protos[0], "end2end", nc, nm
    if end2end:
        log.warning("%s: the metadata says end-to-end, but the outputs are a raw head's; decoding them with NMS", where)
    candidates = []
    for f_axis, n_axis in ((1, 2), (2, 1)):
        f, n = int(d[f_axis]), int(d[n_axis])
        for fmt, head, per_cell in (("yolov8", 4, 1), ("yolov5", 5, 3)):
            k = f - head - nm
            if k < 1 or (nc is not None and k != nc):
                continue
            score = 2 if n == anchor_count(net, strides, per_cell=per_cell) else (1 if n > f else 0)
            candidates.append((score, fmt, k))
    if not candidates:
        fits = sorted({int(d[f_axis]) - head - nm for f_axis, n_axis in ((1, 2), (2, 1)) for _, head, per_cell in
                       (("yolov8", 4, 1), ("yolov5", 5, 3))
                       if int(d[f_axis]) - head - nm >= 1 and int(d[n_axis]) == anchor_count(net, strides, per_cell=per_cell)})
        hint = f" (they fit {' or '.join(map(str, fits))} classes: --classes must name that many)" if nc is not None and fits else ""
        raise fail(f"no split of the features into box + {nc if nc is not None else 'nc'} classes + {nm} coefficients{hint}")
    candidates.sort(key=lambda c: (-c[0], c[1] != "yolov8"))
    best = candidates[0]
    if nc is not None and best[0] < 2:  # the given class count splits the features, but not at the anchor count
        fits = sorted({int(d[f_axis]) - head - nm for f_axis, n_axis in ((1, 2), (2, 1)) for head, per_cell in
                       ((4, 1), (5, 3)) if int(d[f_axis]) - head - nm >= 1
                       and int(d[n_axis]) == anchor_count(net, strides, per_cell=per_cell)})
        if fits:  # 79 names for an 80-class YOLOv8 head read it as a YOLOv5 one: 0 detections, said nowhere
            raise fail(f"{nc} classes split the features only into a layout whose anchor count is not the head's; "
                       f"the head fits {' or '.join(map(str, fits))} classes (--classes, --names or the model's "
                       "names metadata must give that many)")
    if nc is None and len({c[2] for c in candidates if c[0] == best[0]}) > 1:
        raise fail("the class count is ambiguous")
    return dets[0], protos[0], best[1], best[2], nm


def _rename_io(model, renames: dict[str, str], in_name: str) -> None:
    """The graph reads ``images`` and writes the outputs under edgeseg's names (Identity nodes keep
    the original names inside)."""
    from onnx import helper

    seen: set[str] = set()
    for out in list(model.graph.output):  # an output listed twice: once (ONNX Runtime refused the renamed graph,
        if out.name in seen:  # "Duplicate definition of name (prototypes)")
            model.graph.output.remove(out)
        seen.add(out.name)
    taken = {o for n in model.graph.node for o in n.output} | {i.name for i in model.graph.initializer}
    for new in ("images", *renames.values()):
        if new in taken and new not in (in_name, *renames):
            raise ExportError(f"the graph already has an internal tensor named {new!r}; cannot rename its IO to edgeseg's")
    if in_name != "images":
        inp = next(i for i in model.graph.input if i.name == in_name)
        inp.name = "images"
        model.graph.node.insert(0, helper.make_node("Identity", ["images"], [in_name],
                                                    name=fresh_node_name(model.graph, "edgeseg_input")))
    for out in model.graph.output:
        new = renames.get(out.name)
        if new and new != out.name:
            model.graph.node.append(helper.make_node("Identity", [out.name], [new],
                                                     name=fresh_node_name(model.graph, f"edgeseg_{new}")))
            out.name = new


def _assumed(path: Path, what: str, whose: str, spec: InputSpec, given: dict, hint: str = "") -> None:
    """Warn which pre-processing the bundle got (``spec``'s, the user's fields included) unless the
    user gave every field that decides it."""
    told = [f"--{k.replace('_', '-')}" for k in ("resize", "mean", "std", "scale") if k not in given]
    if told:
        log.warning("%s: %s; assuming %s's pre-processing (%s%s, %s, mean %s, std %s, scale %g) - pass --preprocess "
                    "NAME (%s) or %s to override%s", path, what, whose, spec.resize,
                    f" {spec.pad_value}, {spec.anchor}" if spec.resize == "letterbox" else "", spec.color,
                    ",".join(f"{v:g}" for v in spec.mean), ",".join(f"{v:g}" for v in spec.std), spec.scale,
                    ", ".join(PREPROCESS), ", ".join(told), hint)


def _declared_shape(kind: str, shape: tuple[int, ...], after_nms: bool, spec: InputSpec) -> tuple[int | str, ...]:
    """An output's shape for the manifest: a box-and-mask model's detection count is the frame's
    (``detections``, as edgeseg's own Mask R-CNN declares it), and masks over a frame fed at its own
    size have the frame's size."""
    s: list[int | str] = list(shape)
    if after_nms:
        s[1] = "detections"
        if kind == "masks" and spec.size_rule != "fixed":
            s[2:] = ["height", "width"]
    return tuple(s)


def _presets() -> dict[str, dict]:
    from .import_boxmask import DETECTRON2_INPUT, MMDET_INPUT, RTMDET_INPUT, TORCHVISION_INPUT

    return {"ultralytics": ULTRALYTICS_INPUT, "yolact": YOLACT_INPUT, "mmdet": MMDET_INPUT, "rtmdet": RTMDET_INPUT,
            "torchvision": TORCHVISION_INPUT, "detectron2": DETECTRON2_INPUT}


#: ``--preprocess`` names: the exporters' pre-processing conventions (:func:`import_instance_onnx`).
PREPROCESS = ("ultralytics", "yolact", "mmdet", "rtmdet", "torchvision", "detectron2")


def import_instance_onnx(onnx_path: str | os.PathLike, out: str | os.PathLike, *, classes: int | Sequence[str] | None,
                         input_spec: InputSpec | None, palette=None, name: str | None = None,
                         overwrite: bool = False, options: InstanceOptions | None = None,
                         input_overrides: dict | None = None, preprocess: str | None = None,
                         things: Sequence[str | int] | None = None, query_options: dict | None = None,
                         hf_config=None) -> Bundle:
    """Import an instance model made elsewhere: the prototype-mask family (module doc) or the
    box-and-mask one (:mod:`edgeseg.export.import_boxmask`). ``input_spec`` None: the exporter's
    conventions (Ultralytics: letterbox 114, /255, the metadata's ``imgsz``; YOLACT, MMDetection,
    torchvision: theirs; ``preprocess``, one of :data:`PREPROCESS`, names them instead of the outputs),
    with ``input_overrides`` (``InputSpec`` fields: ``size``, ``mean``, ...) replacing single fields.
    Mask-classification models (:mod:`edgeseg.export.import_query`) also take ``things`` (a panoptic
    model's thing classes: the only ones kept as instances) and ``query_options`` (``query_convention``,
    ``score_threshold``); other models refuse them. ``hf_config``: a Hugging Face export's names and
    normalisation (:mod:`edgeseg.export.hf_config`), taken for a mask-classification model only, where
    ``classes``, a ``preprocess`` preset and ``input_overrides`` are not given."""
    from ..decode.instance import decode_instance
    from .names import _palette, normalize_classes
    from .graph import default_opset
    from .import_boxmask import (DETECTRON2_INPUT, MMDET_INPUT, PLACEHOLDER_CLASSES, TORCHVISION_INPUT,
                                 batch_image_input, boxmask_to_layout, detect_boxmask_layout, mmdeploy_ops_error)
    from onnx import TensorProto

    from .graph import Appender
    from .import_query import DETECTRON2_TOPK, QUERY_INPUT, detect_query_outputs, prepare, query_to_dense, require_opset
    from .importer import (_reconcile_spec, _session_for, _smoke_feed, load_onnx_checked, model_input_size,
                           upgrade_opset, write_imported)

    path = Path(onnx_path)
    if preprocess is not None and preprocess not in PREPROCESS:
        raise InputError(f"unknown pre-processing {preprocess!r}", fix=f"one of {', '.join(PREPROCESS)}")
    preset = _presets()[preprocess] if preprocess else None
    model = load_onnx_checked(path)
    meta = onnx_metadata(model)
    meta_names = ultralytics_names(meta)
    names: tuple[str, ...] | None = None
    if classes is not None:
        names = normalize_classes(classes, None, f"import of {path}")
        if meta_names is not None and len(meta_names) != len(names):
            raise InputError(f"{path}: the model's metadata names {len(meta_names)} classes, but {len(names)} were given "
                             "(--classes/--names)", fix="drop --classes/--names to use the model's own names, or give "
                                                        "one per class")
    elif meta_names is not None:
        names = meta_names
    original_opset = default_opset(model)
    model, opset, note = upgrade_opset(model, path)
    unbatched_input = batch_image_input(model)  # torchvision's [3, H, W]: its original name, or None
    defaulted = input_spec is None
    given = dict(input_overrides or {})
    if not defaulted and (given or preset):
        raise InputError("input_spec is the whole pre-processing: input_overrides and preprocess change the recognised "
                         "conventions, which a given input_spec replaces", fix="pass input_spec alone, or leave it None")
    static = model_input_size(model, given.get("layout", "NCHW"))
    if defaulted:
        size = given.get("size") or static or ultralytics_imgsz(meta) or \
            (hf_config.input.get("size") if hf_config is not None else None)
        any_size = size is None and unbatched_input is not None  # torchvision resizes inside the graph: feed frames as they are
        if size is None and not any_size:
            raise InputError(f"{path}: the model's input size is dynamic and its metadata has no imgsz", fix="pass --size WxH")
        input_spec = InputSpec(**{**(preset or ULTRALYTICS_INPUT), **given, "size": size,
                                  "size_rule": given.get("size_rule") or ("any" if any_size else "fixed")})
    spec, in_name = _reconcile_spec(model, input_spec, path)
    custom = mmdeploy_ops_error(model, str(path))
    if custom is not None:
        raise custom
    session = _session_for(model, path)
    feed = _smoke_feed(spec)
    fed = ImageShape(*(feed.shape[2:4] if spec.layout == "NCHW" else feed.shape[1:3]))
    try:
        ys = session.run(None, {in_name: feed})
    except Exception as e:  # noqa: BLE001 - ORT's pybind errors: the model cannot run at this size or on this frame
        first = str(e).strip().splitlines()[0][:300] if str(e).strip() else type(e).__name__
        raise ExportError(f"{path}: the model failed on a {fed.width}x{fed.height} test frame: {first}",
                          fix="a dynamic-size export runs at sizes its network divides (pass --size WxH with multiples of "
                              "32); a torchvision export that fails on a frame without detections needs a newer "
                              "torchvision to export it") from None
    arrays = {o.name: y for o, y in zip(session.get_outputs(), ys)}
    shapes = {k: tuple(y.shape) for k, y in arrays.items()}
    boxmask = detect_boxmask_layout(arrays, fed, str(path), roi_align=any(n.op_type == "RoiAlign" for n in model.graph.node))
    query = None if boxmask is not None else detect_query_outputs(arrays, None if names is None else len(names), str(path))
    yolact = None if boxmask is not None or query is not None else \
        detect_yolact_layout(shapes, lambda why: _layout_fail(shapes, str(path), why))
    report: dict = {}
    if (things or query_options) and query is None:
        raise InputError(f"{path}: --things, --query-convention and --score-threshold at import apply to "
                         "mask-classification models (MaskFormer, Mask2Former); this one's outputs are "
                         + ", ".join(f"{k} {list(v)}" for k, v in shapes.items()),
                         fix="drop them (edgeseg run and predict take --score-threshold)")
    if query is not None:  # MaskFormer / Mask2Former: their instance inference, inside the graph
        from .import_panoptic import _thing_indices, query_convention

        require_opset(opset, path)
        qopts = dict(query_options or {})
        qconv = query_convention(query.classes, qopts.pop("query_convention", None))
        if qopts.keys() - {"score_threshold"}:
            raise InputError(f"unknown query options {sorted(qopts.keys() - {'score_threshold'})}",
                             fix="query_convention and score_threshold")
        hf_used = []
        if names is None and hf_config is not None and hf_config.names:
            if len(hf_config.names) == query.num_classes:
                names = hf_config.names
                hf_used.append(f"{query.num_classes} class names")
            else:
                log.warning("%s: config.json names %d classes, the model scores %d: not used", path,
                            len(hf_config.names), query.num_classes)
        if isinstance(things, str):
            things = [t.strip() for t in things.split(",") if t.strip()]
        thing_idx = _thing_indices(things, names or tuple(f"class{i}" for i in range(query.num_classes)), str(path)) \
            if things else None
        # transformers keeps Q pairs and those scoring at least 0.5 (edgeseg: above it); the authors' code the best 100
        top_k, threshold = (None, 0.5) if qconv == "transformers" else (DETECTRON2_TOPK, 0.0)
        options = (options or InstanceOptions()).replace(score_threshold=qopts.get("score_threshold", threshold),
                                                         max_detections=top_k or query.num_queries)
        if defaulted:
            hf_norm = {k: v for k, v in (hf_config.input if hf_config is not None and preset is None else {}).items()
                       if k in ("mean", "std", "scale") and k not in given}
            hf_used += [f"{k} {v}" for k, v in hf_norm.items()]
            convention = preset or {**QUERY_INPUT, **hf_norm}
            if preset is None and ("mean" in hf_norm or "scale" in hf_norm):  # their pad is 0 after normalising
                convention["pad_value"] = pad_levels([m / convention["scale"] for m in convention["mean"]],
                                                     convention["color"])  # the pixel that normalises to 0
            spec = dataclasses.replace(spec, **{**convention, **{k: v for k, v in given.items() if k in convention}})
            if preset is None and not hf_norm:
                _assumed(path, "mask-classification outputs", "Mask2Former", spec, given)
        if hf_used:
            log.warning("%s: from %s: %s", path, " and ".join(Path(f).name for f in hf_config.files), ", ".join(hf_used))
        original = {"class_logits": query.classes, "mask_logits": query.masks}
        query, dtypes = prepare(model, query, ("scores", "classes", "masks"))
        app = Appender(model.graph, "edgeseg_query_")
        app.set_outputs(query_to_dense(app, query, dtypes, top_k=top_k, things=thing_idx),
                        {"scores": (TensorProto.FLOAT, 2), "classes": (TensorProto.INT64, 2), "masks": (TensorProto.FLOAT, 4)})
        # one frame at a time: the top-k runs over the flattened [1, Q*C] scores
        spec = dataclasses.replace(spec, dynamic_batch=False)
        dim0 = next(i for i in model.graph.input if i.name == in_name).type.tensor_type.shape.dim[0]
        dim0.Clear()
        dim0.dim_value = 1
        renames = {}
        layout, fmt, nc, kinds = "dense", None, query.num_classes, ("scores", "classes", "masks")
        report = {"source_layout": "mask-classification", "queries": query.num_queries, "query_convention": qconv,
                  "mask_size": list(query.mask_hw), **({"things": list(thing_idx)} if thing_idx else {})}
    elif boxmask is not None:  # after their own NMS: boxes, scores, labels, masks
        if names is None:
            raise InputError(f"{path}: a box-and-mask model ({boxmask.labels!r} holds class indices) carries no class "
                             "names", fix="pass --names with one name per class index the model outputs (--classes N "
                                          "for placeholders; torchvision's COCO models: its 91 categories, "
                                          "__background__ first)")
        family, convention = ("MMDetection", MMDET_INPUT) if boxmask.batched else \
            ("torchvision", TORCHVISION_INPUT) if boxmask.full_image else ("Detectron2", DETECTRON2_INPUT)
        convention = preset or convention
        if spec.size_rule == "fixed" and (not boxmask.batched or static is None) and convention["resize"] == "resize":
            # a dynamic MMDeploy export, or torchvision's at a fixed size: keep the aspect ratio (their own resize
            # does); MMDeploy's static exports resize without it (their Resize gets keep_ratio=False)
            convention = dict(convention, resize="letterbox")
        if family == "torchvision" and names and names[0].lower() not in PLACEHOLDER_CLASSES:
            log.warning("%s: torchvision's detection models count labels from 1 (0 is the background): the first "
                        "name, %r, is label 0; give the model's own category list, __background__ first", path, names[0])
        if defaulted:
            spec = dataclasses.replace(spec, **{**convention, **{k: v for k, v in given.items() if k in convention}})
            if preset is None:
                _assumed(path, f"{family} outputs", family, spec, given,
                         hint="; RTMDet-Ins takes BGR with its own mean/std, letterboxed: --preprocess rtmdet"
                         if boxmask.batched and boxmask.full_image else "")
        original, renames = boxmask_to_layout(model, boxmask, opset), {}
        layout, fmt, nc, kinds = boxmask.layout, None, len(names), ("boxes", "scores", "classes", "masks")
        report = {"source_layout": "mmdeploy" if boxmask.scores is None else
                  family.lower() if not boxmask.batched else "boxes-scores"}
    elif yolact is not None:  # YOLACT's separate outputs -> the yolov8 layout, inside the graph
        if names is not None and len(names) != yolact.nc:
            raise InputError(f"{path}: the model has {yolact.nc} object classes (+ background), but {len(names)} were "
                             "given (--classes/--names)",
                             fix="give one name per object class, without the background")
        if defaulted:  # keeps what _reconcile_spec read from the graph
            convention = preset or YOLACT_INPUT
            spec = dataclasses.replace(spec, **{**convention, **{k: v for k, v in given.items() if k in convention}})
            if preset is None:
                _assumed(path, "YOLACT outputs", "YOLACT", spec, given)
        det, proto = yolact_to_prototype(model, yolact, spec.size or fed)
        fmt, nc, nm = "yolov8", yolact.nc, yolact.nm
        original = {"conf": yolact.conf, "boxes": yolact.boxes, "coefficients": yolact.coefficients,
                    "prototypes": yolact.prototypes, **({"priors": yolact.priors} if yolact.priors else {})}
        renames = {det: "detections", proto: "prototypes"}
        layout, kinds = "prototype", ("detections", "prototypes")
        report = {"format": fmt, "mask_coefficients": nm, "source_layout": "yolact"}
    else:
        if defaulted and preset is None and not is_ultralytics(meta):
            _assumed(path, "no exporter metadata", "Ultralytics", spec, given)
        flag = meta.get("end2end", "").strip().lower()
        det, proto, fmt, nc, nm = detect_prototype_layout(shapes, None if names is None else len(names), spec.size or fed,
                                                          str(path), end2end={"true": True, "false": False}.get(flag),
                                                          strides=head_strides(meta))
        original = {"detections": det, "prototypes": proto}
        renames = {det: "detections", proto: "prototypes"}
        layout, kinds = "prototype", ("detections", "prototypes")
        report = {"format": fmt, "mask_coefficients": nm, "source_layout": fmt}
    if names is None:
        names = tuple(f"class{i}" for i in range(nc))
        log.warning("%s: no class names; using class0..class%d (pass --classes with a names file)", path, nc - 1)
    _rename_io(model, renames, in_name)
    model = clean_graph(model)
    opts = (options or InstanceOptions()).replace(layout=layout)
    if layout == "prototype":
        opts = opts.replace(prototype_format=fmt, num_masks=nm)
    session = _session_for(model, path)
    feed = _smoke_feed(spec)
    y = dict(zip([o.name for o in session.get_outputs()], session.run(None, {"images": feed})))
    nan = [k for k, v in y.items() if np.issubdtype(v.dtype, np.floating) and np.isnan(v).any()]
    if nan:  # imported, it found nothing (NaN scores) or empty masks (NaN prototypes), said nowhere
        raise ExportError(f"{path}: the model's output(s) {', '.join(nan)} hold NaN on a test frame",
                          fix="check the export (a float16 overflow, an uninitialised weight): run the ONNX file on an "
                              "image with onnxruntime and look at its outputs")
    flat = [k for k in kinds if k in y and y[k].size > 1 and np.issubdtype(y[k].dtype, np.floating)
            and float(y[k].min()) == float(y[k].max())]
    if layout == "prototype" and flat:
        log.warning("%s: output(s) %s are one constant value on a test frame: the model may be broken (it will find "
                    "nothing, or the same everywhere)", path, ", ".join(flat))
    manifest = Manifest(
        name=name or path.stem, task="instance", classes=tuple(names), input=spec,
        outputs=tuple(OutputSpec(k, k, str(y[k].dtype), _declared_shape(k, y[k].shape, boxmask is not None, spec))
                      for k in kinds),
        palette=_palette(palette, len(names)), decoder=opts.to_dict(),
        provenance={"source": "onnx", "file": path.name, "original_opset": original_opset, "opset": opset,
                    "original_input": in_name if unbatched_input is None else f"{unbatched_input} [3, H, W]",
                    "original_outputs": original,
                    "exporter": {k: meta[k] for k in ("author", "version", "task", "imgsz", "stride", "end2end")
                                 if k in meta},
                    "producer": f"{model.producer_name} {model.producer_version}".strip()},
    )
    size = spec.size or fed
    _, pmeta = spec.preprocess(np.zeros((size.height, size.width, 3), np.uint8))
    smoke = decode_instance(y, pmeta, manifest)  # the decoder runs on the real outputs before anything is written
    return write_imported(model, out, manifest, opset,
                          {"layout": layout, "classes": nc, **report, "outputs": {k: list(v) for k, v in shapes.items()},
                           "opset_note": note, "smoke_detections": len(smoke)}, overwrite)


__all__ = ["import_instance_onnx", "detect_prototype_layout", "ultralytics_names", "ultralytics_semantic", "PREPROCESS",
           "ULTRALYTICS_INPUT"]
