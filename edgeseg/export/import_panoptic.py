"""Panoptic-DeepLab models made elsewhere -> a panoptic bundle (``center`` layout).

Panoptic-DeepLab (Cheng et al., CVPR 2020) ends in three maps, as its reference implementations give
them at inference (Detectron2's ``projects/Panoptic-DeepLab``, ``bowenc0221/panoptic-deeplab``,
DeepLab2): semantic logits ``[1, C, h, w]``, the centre heatmap ``[1, 1, h, w]`` (no sigmoid) and
the centre offsets ``[1, 2, h, w]``, ``(dy, dx)`` in network-input pixels (those implementations
upsample the offsets to the input and scale them with it). Exports that end there, NCHW or NHWC
(a DeepLab2 model exported with a signature of its own around the network: its stock export takes
an unbatched uint8 image and ends in its post-processing), are recognised from one run on a test
frame by their channel counts (the class count, 1, 2; a 3-D heatmap too; the names ``sem``/``logit``,
``center``/``heatmap``, ``offset`` settle ties), and the graph is made to write edgeseg's
``semantic``, ``center`` and ``offset`` (outputs renamed, ``Cast`` to float32, ``Unsqueeze`` of a
3-D heatmap, ``Transpose`` for NHWC, ``Gather`` for ``(dx, dy)`` offsets, ``Mul`` by
``offset_scale``). The grouping, stuff area and void handling are then edgeseg's own decoder's
(:mod:`edgeseg.decode.panoptic`), with the thing classes the user names and Panoptic-DeepLab's
post-processing defaults (:data:`REFERENCE_OPTIONS`).
"""
from __future__ import annotations

import logging
import os
from collections.abc import Sequence
from pathlib import Path

import numpy as np

from ..bundle import Bundle
from ..errors import ExportError, InputError
from ..structures import ImageShape, InputSpec, PanopticOptions
from ..structures.manifest import Manifest, OutputSpec
from .graph import Appender, clean_graph, rename_tensor

log = logging.getLogger(__name__)

ROLES = {"semantic": ("sem", "seg", "logit", "class"), "center": ("center", "centre", "heat", "ctr"),
         "offset": ("offset", "off", "regress")}


def _fail(outs: dict[str, np.ndarray], where: str, why: str) -> ExportError:
    listing = ", ".join(f"{k} {v.dtype} {list(v.shape)}" for k, v in outs.items())
    return ExportError(f"{where}: outputs ({listing}) are not Panoptic-DeepLab's: {why}",
                       fix="expected float semantic logits [1, C, h, w], a centre heatmap [1, 1, h, w] and offsets "
                           "[1, 2, h, w] (or the same channels-last), C the number of --classes")


def detect_center_outputs(outs: dict[str, np.ndarray], nc: int, where: str) -> tuple[dict[str, str], bool]:
    """``({"semantic": name, "center": name, "offset": name}, channels_last)`` from one run's outputs,
    or an :class:`ExportError` naming every output when they do not fit. The heatmap may be 3-D
    ``[1, h, w]`` (DeepLab2 squeezes it); all three maps must have the same size; of several
    candidates for a role, one named for it wins (``logit`` over ``prob`` for the semantic map)."""
    arrays = {k: np.asarray(v) for k, v in outs.items()}
    maps = {k: v for k, v in arrays.items() if v.ndim in (3, 4) and v.dtype.kind == "f" and v.shape[:1] == (1,)}
    found: list[tuple[int, dict[str, str], bool]] = []
    tied: list[str] = []
    for last in (False, True):
        def channels(v):
            return 1 if v.ndim == 3 else (v.shape[3] if last else v.shape[1])

        def spatial(v):
            return tuple(v.shape[1:3]) if v.ndim == 3 or last else tuple(v.shape[2:4])

        want = {"semantic": nc, "center": 1, "offset": 2}
        cands = {role: [k for k, v in maps.items() if channels(v) == c and (v.ndim == 4 or role == "center")]
                 for role, c in want.items()}
        picked: dict[str, str] = {}
        hits = 0
        for role in ("center", "offset", "semantic"):  # the 1- and 2-channel maps first: a class count of 1 or 2
            left = [k for k in cands[role] if k not in picked.values()]
            named = [k for k in left if any(h in k.lower() for h in ROLES[role])]
            if role == "semantic" and len(named) > 1:  # DeepLab2: semantic_logits and semantic_probs
                named = [k for k in named if "logit" in k.lower()] or named
            if len(left) == 1:
                picked[role] = left[0]
                hits += bool(named)
            elif len(named) == 1:
                picked[role] = named[0]
                hits += 1
            else:
                if len(left) > 1:
                    tied.append(f"{role}: {', '.join(left)}")
                break
        if len(picked) == 3 and len({spatial(maps[v]) for v in picked.values()}) == 1:
            found.append((hits, picked, last))
    if not found:
        why = (f"several outputs fit one role ({'; '.join(tied)}); name them 'semantic_logits', 'center' and 'offset'"
               if tied else f"no three maps of one size with {nc}, 1 and 2 channels")
        raise _fail(arrays, where, why)
    found.sort(key=lambda f: -f[0])
    if len(found) > 1 and found[0][0] == found[1][0] and found[0][1] != found[1][1]:
        raise _fail(arrays, where, "channels-first and channels-last both fit; name the outputs 'semantic', 'center' "
                                   "and 'offset'")
    return found[0][1], found[0][2]


def _thing_indices(things: Sequence[str | int], names: Sequence[str], where: str) -> tuple[int, ...]:
    lower = [n.lower() for n in names]
    out = []
    for t in things:
        if isinstance(t, int) or str(t).isdigit():
            k = int(t)
        elif str(t).lower() in lower:
            k = lower.index(str(t).lower())
        else:
            raise InputError(f"{where}: thing class {t!r} is not one of the classes {list(names)}",
                             fix="--things takes class names or indices, comma-separated")
        if not 0 <= k < len(names):
            raise InputError(f"{where}: thing class index {k} is outside the {len(names)} classes")
        out.append(k)
    if not out:
        raise InputError(f"{where}: no thing classes", fix="name the classes that are things with --things "
                                                          "(e.g. --things person,rider,car)")
    return tuple(sorted(set(out)))


#: Panoptic-DeepLab's post-processing defaults (Detectron2's and bowenc0221's configs): centre threshold 0.1,
#: NMS kernel 7 (at the input's resolution), the best 200 centres, stuff segments under 2048 pixels void.
REFERENCE_OPTIONS = dict(center_threshold=0.1, nms_kernel=7, top_k=200, stuff_area=2048)


#: Mask-classification models' panoptic inference defaults, per convention (:mod:`edgeseg.decode.panoptic_query`):
#: the authors' configs (``OBJECT_MASK_THRESHOLD`` 0.8, ``OVERLAP_THRESHOLD`` 0.8; MaskFormer's COCO panoptic
#: config has 0.7: ``--score-threshold``) and transformers' ``post_process_panoptic_segmentation`` (threshold
#: 0.5, overlap_mask_area_threshold 0.8); none drops small stuff segments. Without ``query_convention`` it
#: follows the output names: transformers' ``class_queries_logits``/``masks_queries_logits``, else Mask2Former's.
_AUTHORS = dict(score_threshold=0.8, mask_threshold=0.5, mask_area_ratio=0.8, stuff_area=0)
QUERY_OPTIONS = {"mask2former": _AUTHORS, "maskformer": _AUTHORS, "transformers": {**_AUTHORS, "score_threshold": 0.5}}


def query_convention(class_output: str, given: str | None = None) -> str:
    """The post-processing a mask-classification export expects: ``given``, else from its class output's name."""
    if given is not None:
        if given not in QUERY_OPTIONS:
            raise InputError(f"unknown query convention {given!r}", fix=f"one of {', '.join(QUERY_OPTIONS)}")
        return given
    return "transformers" if "queries" in class_output.lower() else "mask2former"


def _import_query(model, query, arrays: dict, path: Path, out, *, names, thing_idx, spec: InputSpec, feed, in_name: str,
                  opset: int, original_opset: int, note, palette, name, overwrite: bool, options: dict | None) -> Bundle:
    """The ``query`` layout: the class and mask logits renamed ``class_logits`` and ``mask_logits`` (float32)."""
    from onnx import TensorProto

    from ..decode.panoptic import decode_panoptic
    from .names import _palette
    from .import_instance import _rename_io
    from .import_query import prepare
    from .importer import _session_for, write_imported

    options = dict(options or {})
    convention = query_convention(query.classes, options.pop("query_convention", None))
    center_only = {k for k in options if k in REFERENCE_OPTIONS and k != "stuff_area"}
    if center_only:
        log.warning("%s: %s apply to Panoptic-DeepLab's centre layout, not to a mask-classification model; ignored",
                    path, ", ".join(sorted(center_only)))
    opts = PanopticOptions().replace(**{**QUERY_OPTIONS[convention], **{k: v for k, v in options.items()
                                                                          if k not in center_only}},
                                     layout="query", thing_classes=thing_idx, query_convention=convention)
    original = {"class_logits": query.classes, "mask_logits": query.masks}
    query, dtypes = prepare(model, query, ("class_logits", "mask_logits"))
    app = Appender(model.graph, "edgeseg_query_")
    app.set_outputs({role: src if dt == TensorProto.FLOAT else app.node("Cast", [src], to=TensorProto.FLOAT)
                     for role, src, dt in (("class_logits", query.classes, dtypes["classes"]),
                                           ("mask_logits", query.masks, dtypes["masks"]))},
                    {"class_logits": (TensorProto.FLOAT, 3), "mask_logits": (TensorProto.FLOAT, 4)})
    _rename_io(model, {}, in_name)
    model = clean_graph(model)
    session = _session_for(model, path)
    y = dict(zip([o.name for o in session.get_outputs()], session.run(None, {"images": feed})))
    batch = "batch" if spec.dynamic_batch else 1
    manifest = Manifest(
        name=name or path.stem, task="panoptic", classes=tuple(names), input=spec,
        outputs=(OutputSpec("class_logits", "class_logits", "float32", (batch, *y["class_logits"].shape[1:])),
                 OutputSpec("mask_logits", "mask_logits", "float32",
                            (batch, y["mask_logits"].shape[1], *(y["mask_logits"].shape[2:] if spec.size_rule == "fixed"
                                                                 else ("height", "width"))))),
        palette=_palette(palette, len(names)), decoder=opts.to_dict(),
        provenance={"source": "onnx", "file": path.name, "original_opset": original_opset, "opset": opset,
                    "original_input": in_name, "original_outputs": original,
                    "producer": f"{model.producer_name} {model.producer_version}".strip()},
    )
    fed = ImageShape(*(feed.shape[2:4] if spec.layout == "NCHW" else feed.shape[1:3]))
    _, pmeta = spec.preprocess(np.zeros((fed.height, fed.width, 3), np.uint8))
    smoke = decode_panoptic(y, pmeta, manifest)  # the decoder runs on the real outputs before anything is written
    report = {"layout": "query", "query_convention": convention, "queries": query.num_queries,
              "mask_size": list(query.mask_hw), "outputs": {k: list(v.shape) for k, v in arrays.items()},
              "opset_note": note, "smoke_segments": len(smoke.segments)}
    return write_imported(model, out, manifest, opset, report, overwrite)


def import_panoptic_onnx(onnx_path: str | os.PathLike, out: str | os.PathLike, *, classes: int | Sequence[str],
                         things: Sequence[str | int], input_spec: InputSpec, offset_order: str = "yx",
                         offset_scale: float = 1.0, palette=None, name: str | None = None, overwrite: bool = False,
                         options: dict | None = None) -> Bundle:
    """Import a Panoptic-DeepLab export (module doc). ``things``: the thing classes, names or indices;
    ``offset_order``: ``yx`` (Panoptic-DeepLab's) or ``xy``; ``offset_scale``: multiplies the offsets
    (the map stride, for heads exported before the upsampling that scales them); ``options``:
    :class:`~edgeseg.structures.PanopticOptions` fields over :data:`REFERENCE_OPTIONS`."""
    from onnx import TensorProto, helper

    from ..decode.panoptic import decode_panoptic
    from .names import _palette, normalize_classes
    from .import_instance import _rename_io
    from .import_query import detect_query_outputs
    from .importer import _session_for, prepared, write_imported

    path = Path(onnx_path)
    if offset_order not in ("yx", "xy"):
        raise InputError(f"offset order must be yx or xy, got {offset_order!r}")
    try:
        offset_scale = float(offset_scale)
    except (TypeError, ValueError):
        raise InputError(f"offset scale must be a number, got {offset_scale!r}") from None
    if not (offset_scale > 0 and np.isfinite(offset_scale)):
        raise InputError(f"offset scale must be a positive number, got {offset_scale}")
    if isinstance(things, str):  # "person,car" as the command line gives it
        things = [t.strip() for t in things.split(",") if t.strip()]
    names = normalize_classes(classes, None, f"import of {path}")
    thing_idx = _thing_indices(things, names, str(path))
    # the decoder options are checked before any model work (an even --nms-kernel is refused at once)
    # (the query layout's fields are checked by the same dataclass)
    opts = PanopticOptions().replace(**{**REFERENCE_OPTIONS, **(options or {})}, layout="center",
                                     thing_classes=thing_idx)
    model, original_opset, opset, note, spec, in_name, session, feed = prepared(path, input_spec)
    fed = ImageShape(*(feed.shape[2:4] if spec.layout == "NCHW" else feed.shape[1:3]))
    try:
        ys = session.run(None, {in_name: feed})
    except Exception as e:  # noqa: BLE001 - ORT's pybind errors
        first = str(e).strip().splitlines()[0][:300] if str(e).strip() else type(e).__name__
        raise ExportError(f"{path}: the model failed on a {fed.width}x{fed.height} test frame: {first}",
                          fix="check --size: a dynamic-size export runs at sizes its network divides") from None
    arrays = {o.name: y for o, y in zip(session.get_outputs(), ys)}
    query = detect_query_outputs(arrays, len(names), str(path))
    if query is not None:
        if offset_order != "yx" or offset_scale != 1.0:
            log.warning("%s: --offset-order and --offset-scale apply to Panoptic-DeepLab's offsets, not to a "
                        "mask-classification model; ignored", path)
        return _import_query(model, query, arrays, path, out, names=names, thing_idx=thing_idx, spec=spec, feed=feed,
                             in_name=in_name, opset=opset, original_opset=original_opset, note=note, palette=palette,
                             name=name, overwrite=overwrite, options=options)
    given_query = sorted(k for k in (options or {}) if k in ("query_convention", "score_threshold", "mask_area_ratio"))
    if given_query:
        raise InputError(f"{path}: {', '.join(given_query)} apply to mask-classification models (MaskFormer, "
                         "Mask2Former); this one's outputs are "
                         + ", ".join(f"{k} {list(np.shape(v))}" for k, v in arrays.items()),
                         fix="drop them for a Panoptic-DeepLab model")
    roles, channels_last = detect_center_outputs(arrays, len(names), str(path))
    original = dict(roles)
    heat = arrays[roles["center"]]
    map_hw = heat.shape[1:3] if heat.ndim == 3 or channels_last else heat.shape[2:4]
    stride = fed.height / map_hw[0]
    if stride > 1.01 and offset_scale == 1.0:
        log.warning("%s: the maps are 1/%g of the input (%dx%d): edgeseg reads the offsets in input pixels, as "
                    "Panoptic-DeepLab's inference scales them and edgeseg's own exports give them at this size; only "
                    "if this model's offsets are in grid units (a head exported before its scaling) pass "
                    "--offset-scale %g (compare both with edgeseg eval --limit 8)", path, stride, map_hw[1], map_hw[0],
                    stride)
    g = model.graph
    pre = "edgeseg_panoptic_"
    taken = {o for n in g.node for o in n.output} | {t.name for t in g.initializer}
    for target in ROLES:  # any tensor already called like one of the outputs gets a fresh name first
        if target in taken:
            rename_tensor(g, target, pre + target)
            roles = {r: (pre + target if v == target else v) for r, v in roles.items()}
    if any(i.name in ROLES for i in g.input):
        raise ExportError(f"{path}: the input is named like an output edgeseg writes ({g.input[0].name!r})",
                          fix="export with another input name")

    app = Appender(g, pre)
    for role, src in roles.items():  # each map through the steps it needs; the last one writes the role's name
        x, arr = src, arrays[original[role]]
        if arr.dtype != np.float32:  # fp16 / fp64 exports: the decoder and the manifest read float32
            x = app.node("Cast", [x], to=TensorProto.FLOAT)
        if arr.ndim == 3:  # DeepLab2's squeezed heatmap [1, h, w]
            x = app.node("Unsqueeze", [x, app.const(np.array([1], np.int64))])
        elif channels_last:
            x = app.node("Transpose", [x], perm=[0, 3, 1, 2])
        if role == "offset" and offset_order == "xy":
            x = app.node("Gather", [x, app.const(np.array([1, 0], np.int64))], axis=1)
        if role == "offset" and offset_scale != 1.0:
            x = app.node("Mul", [x, app.const(np.float32(offset_scale))])
        app.write_as(x, role)
    app.flush()
    del g.output[:]
    g.output.extend([helper.make_tensor_value_info(r, TensorProto.FLOAT, [1, None, None, None]) for r in ROLES])
    _rename_io(model, {}, in_name)
    model = clean_graph(model)
    session = _session_for(model, path)
    y = dict(zip([o.name for o in session.get_outputs()], session.run(None, {"images": feed})))
    manifest = Manifest(
        name=name or path.stem, task="panoptic", classes=tuple(names), input=spec,
        outputs=tuple(OutputSpec(r, r, str(y[r].dtype), ("batch" if spec.dynamic_batch else 1, y[r].shape[1],
                                                          *(y[r].shape[2:] if spec.size_rule == "fixed"
                                                            else ("height", "width")))) for r in ROLES),
        palette=_palette(palette, len(names)), decoder=opts.to_dict(),
        provenance={"source": "onnx", "file": path.name, "original_opset": original_opset, "opset": opset,
                    "original_input": in_name, "original_outputs": original,
                    "producer": f"{model.producer_name} {model.producer_version}".strip()},
    )
    _, pmeta = spec.preprocess(np.zeros((fed.height, fed.width, 3), np.uint8))
    smoke = decode_panoptic(y, pmeta, manifest)  # the decoder runs on the real outputs before anything is written
    report = {"layout": "center", "channels_last": channels_last, "offset_order": offset_order,
              "offset_scale": offset_scale, "map_stride": stride,
              "outputs": {k: list(v.shape) for k, v in arrays.items()}, "opset_note": note,
              "smoke_segments": len(smoke.segments)}
    return write_imported(model, out, manifest, opset, report, overwrite)


__all__ = ["REFERENCE_OPTIONS", "detect_center_outputs", "import_panoptic_onnx"]
