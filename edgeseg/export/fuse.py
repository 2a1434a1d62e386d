"""Any semantic bundle + any instance bundle -> one panoptic bundle (``edgeseg fuse``).

Panoptic FPN / UPSNet-era systems, and panopticapi's ``combine_semantic_and_instance_predictions``,
build panoptic output from two predictions: instances pasted by score, then stuff from the semantic
map on what is left (:func:`edgeseg.decode.panoptic.fuse_panoptic`). Here both models become ONE
ONNX graph, so a fused bundle is an ordinary panoptic bundle: one runner, one INT8 model gated by
PQ, one stream stage.

The graph takes the frame once, as ``uint8 [1, H, W, 3]`` RGB with the instance model's geometry
(size, resize or letterbox, pad value), and converts it in-graph to what each branch expects
(colour order, ``(pixel * scale - mean) / std``, layout, dtype). When both models resize (no
letterbox) but to different sizes, the semantic branch also resizes in-graph to its own size; a
letterboxed model fuses only with a model of the same size and geometry. Branch nodes, tensors and outputs are prefixed ``sem/`` and
``inst/``; each branch's manifest (classes, outputs, decoder options) travels in the fused
manifest's decoder options, so each branch decodes exactly as its own bundle does before the two
results are fused.

Classes of the fused bundle: the semantic model's stuff classes (by default every class whose name
is not one of the instance model's classes), then the instance model's thing classes (by default
all). Parity: the fused bundle's result equals running the two bundles separately and fusing
(:data:`FAIL_PIXELS` of pixels with the same segment category).
"""
from __future__ import annotations

import os
import tempfile
from dataclasses import replace
from pathlib import Path
from typing import Any, Sequence

import numpy as np

from ..bundle import Bundle
from ..errors import ExportError, InputError
from ..structures import InputSpec, PanopticOptions
from ..structures.manifest import Manifest, ModelFile, OutputSpec
from .._compat import removesuffix
from .graph import half_weights

FAIL_PIXELS = 0.999
FAIL_PIXELS_RESIZED = 0.98  # one in-graph resize instead of cv2's from the frame: edges move by a pixel
#: a float16 branch: apart, its frames are rounded to float16 on the host; in the graph the adapter's Cast to
#: float16 meets the model's own Cast back (or the runtime's, around ops without float16 kernels), and ONNX
#: Runtime and OpenVINO drop the pair: the branch sees unrounded values, and near-tied scores may flip
FAIL_PIXELS_HALF = 0.98
SEM, INST = "sem/", "inst/"


def _fp32_onnx(b: Bundle, what: str):
    import onnx

    entry = next((m for m in b.manifest.models if m.precision == "fp32" and m.file.endswith(".onnx") and not m.target), None)
    if entry is None:
        raise ExportError(f"{what} bundle {b.root} has no FP32 ONNX model", fix="export or import it again with edgeseg")
    return onnx.load(str(b.root / entry.file))


def _check_geometry(sem: InputSpec, inst: InputSpec) -> bool:
    """True when the semantic branch needs an in-graph resize from the instance model's size to its own."""
    if sem.size_rule != "fixed" or inst.size_rule != "fixed":
        raise InputError("fusing needs fixed-size models", fix="export both models with --size WxH")
    if sem.size == inst.size and sem.resize == inst.resize and (sem.resize == "resize" or sem.anchor == inst.anchor):
        return False
    if sem.resize == inst.resize == "resize":
        return True
    def how(m: InputSpec) -> str:
        return f"{m.resize}{', ' + m.anchor if m.resize == 'letterbox' else ''}"

    w, h = inst.size.width, inst.size.height
    stretch = ("stretch frames (a model trained on letterboxed frames may lose accuracy so)")
    if sem.resize == inst.resize == "letterbox" and sem.size != inst.size:
        fix = (f"export the semantic model at {w}x{h} from its weights (edgeseg export WEIGHTS --size {w}x{h}) and import "
               f"that ONNX with --resize letterbox --anchor {inst.anchor}; or import both models again with --resize "
               f"resize, so that both {stretch}")
    elif sem.resize != inst.resize:
        which = "instance" if inst.resize == "letterbox" else "semantic"
        fix = f"import the {which} model again with --resize resize, so that both {stretch}"
    else:
        fix = f"import the semantic model again with --anchor {inst.anchor}, as the instance model letterboxes"
    raise InputError(f"the semantic model takes {sem.size} ({how(sem)}) and the instance model {inst.size} ({how(inst)}): "
                     "a letterboxed model fuses only with a model of the same size and geometry", fix=fix)


def _adapter(spec: InputSpec, src: str, dst: str, prefix: str, resize: bool) -> tuple[list, list]:
    """Nodes and initializers turning ``uint8 [1, H, W, 3]`` RGB ``src`` into ``spec``'s tensor
    ``dst``: to NCHW float, resized to ``spec.size`` (bilinear, half-pixel centres, as cv2.resize)
    when ``resize``, colour order, ``(pixel * scale - mean) / std``, layout and dtype."""
    from onnx import TensorProto, helper, numpy_helper

    nodes, inits, cur = [], [], src

    def node(op: str, inputs: list[str], **attrs: Any) -> None:
        nonlocal cur
        out = f"{prefix}edgeseg_fuse/adapt_{len(nodes)}"
        nodes.append(helper.make_node(op, inputs, [out], name=out, **attrs))
        cur = out

    def const(name: str, value: np.ndarray) -> str:
        inits.append(numpy_helper.from_array(value, f"{prefix}edgeseg_fuse/{name}"))
        return f"{prefix}edgeseg_fuse/{name}"

    node("Cast", [cur], to=TensorProto.FLOAT)
    node("Transpose", [cur], perm=[0, 3, 1, 2])
    if resize:
        size = np.array([1, 3, spec.size.height, spec.size.width], np.int64)
        node("Resize", [cur, "", "", const("size", size)], mode="linear", coordinate_transformation_mode="half_pixel")
    if spec.color == "BGR":
        node("Gather", [cur, const("bgr", np.array([2, 1, 0], np.int64))], axis=1)
    if spec.dtype == "uint8":
        if resize:
            node("Clip", [cur, const("lo", np.array(0, np.float32)), const("hi", np.array(255, np.float32))])
            node("Round", [cur])
        node("Cast", [cur], to=TensorProto.UINT8)
    else:
        mul, add = spec._affine()  # per channel, in the spec's colour order: x * mul + add
        node("Mul", [cur, const("mul", np.asarray(mul, np.float32).reshape(1, 3, 1, 1))])
        node("Add", [cur, const("add", np.asarray(add, np.float32).reshape(1, 3, 1, 1))])
        if spec.dtype == "float16":
            node("Cast", [cur], to=TensorProto.FLOAT16)
    if spec.layout == "NHWC":
        node("Transpose", [cur], perm=[0, 2, 3, 1])
    nodes.append(helper.make_node("Identity", [cur], [dst], name=f"{prefix}edgeseg_fuse/adapt_out"))
    return nodes, inits


def _align_opsets(a, b):
    from onnx import version_converter

    va = next(o.version for o in a.opset_import if o.domain in ("", "ai.onnx"))
    vb = next(o.version for o in b.opset_import if o.domain in ("", "ai.onnx"))
    target = max(va, vb)
    try:
        a = a if va == target else version_converter.convert_version(a, target)
        b = b if vb == target else version_converter.convert_version(b, target)
    except Exception as e:  # noqa: BLE001 - onnx raises several kinds
        raise ExportError(f"cannot bring both models to ONNX opset {target} (they use {va} and {vb}): {e}",
                          fix="export both models with the same --opset") from None
    return a, b, target


def fuse_graphs(sem_model, sem_spec: InputSpec, inst_model, inst_spec: InputSpec):
    """One ``onnx.ModelProto``: input ``images`` uint8 ``[1, H, W, 3]`` RGB, the semantic model's
    outputs prefixed ``sem/`` and the instance model's ``inst/`` (module doc)."""
    import onnx
    from onnx import TensorProto, compose, helper

    resize = _check_geometry(sem_spec, inst_spec)
    sem_model, inst_model, opset = _align_opsets(sem_model, inst_model)
    s = compose.add_prefix(sem_model, SEM)
    i = compose.add_prefix(inst_model, INST)
    size = inst_spec.size
    nodes, inits = [], []
    for spec, m, prefix, rs in ((sem_spec, s, SEM, resize), (inst_spec, i, INST, False)):
        if len(m.graph.input) != 1:
            raise ExportError(f"the {prefix[:-1]} model has {len(m.graph.input)} inputs; fusing needs one image input")
        n, t = _adapter(spec, "images", m.graph.input[0].name, prefix, rs)
        nodes += n
        inits += t
    graph = helper.make_graph(
        nodes + list(s.graph.node) + list(i.graph.node), "edgeseg_fused",
        [helper.make_tensor_value_info("images", TensorProto.UINT8, [1, size.height, size.width, 3])],
        list(s.graph.output) + list(i.graph.output),
        initializer=inits + list(s.graph.initializer) + list(i.graph.initializer),
        value_info=list(s.graph.value_info) + list(i.graph.value_info),
    )
    graph.sparse_initializer.extend(list(s.graph.sparse_initializer) + list(i.graph.sparse_initializer))
    domains = {o.domain: o.version for o in (*sem_model.opset_import, *inst_model.opset_import) if o.domain not in ("", "ai.onnx")}
    opsets = [helper.make_opsetid("", opset)] + [helper.make_opsetid(d, v) for d, v in sorted(domains.items())]
    functions = list(s.functions) + list(i.functions)
    model = helper.make_model(graph, opset_imports=opsets, functions=functions, producer_name="edgeseg fuse")
    model.ir_version = max(sem_model.ir_version, inst_model.ir_version)
    onnx.checker.check_model(model)
    return model


def _names(given: Sequence[str] | None, available: Sequence[str], what: str) -> list[int]:
    lower = [a.lower() for a in available]
    idx = []
    for n in given or ():
        if n.lower() not in lower:
            raise InputError(f"{what} class {n!r} is not one of the model's classes {list(available)}",
                             fix=f"name {what} classes as the model does")
        idx.append(lower.index(n.lower()))
    return idx


def class_plan(sem_classes: Sequence[str], inst_classes: Sequence[str], stuff: Sequence[str] | None = None,
               things: Sequence[str] | None = None) -> tuple[tuple[str, ...], tuple[int, ...], tuple[int, ...], tuple[int, ...]]:
    """``(fused classes, thing class indices, semantic class -> fused class or -1, instance class ->
    fused class or -1)``. Defaults: things = every instance class but placeholders (torchvision's
    ``__background__`` and ``N/A`` entries); stuff = semantic classes not named like a thing class
    (a placeholder, or an instance class left out of ``things``, does not count: a semantic ``background``
    stays stuff)."""
    from .import_boxmask import PLACEHOLDER_CLASSES

    thing_idx = _names(things, inst_classes, "thing") if things else \
        [k for k, c in enumerate(inst_classes) if c.lower() not in PLACEHOLDER_CLASSES]
    # a semantic class named like an instance class that is not a chosen thing stays stuff (its pixels would
    # otherwise belong to no class: a COCO model's 'traffic light' fused with --things person,car)
    inst_lower = {inst_classes[k].lower() for k in thing_idx}
    stuff_idx = _names(stuff, sem_classes, "stuff") if stuff else [k for k, c in enumerate(sem_classes) if c.lower() not in inst_lower]
    if not thing_idx:
        raise InputError("no thing classes to fuse", fix="name at least one instance class with --things")
    classes = tuple(sem_classes[k] for k in stuff_idx) + tuple(inst_classes[k] for k in thing_idx)
    if len({c.lower() for c in classes}) != len(classes):
        raise InputError(f"fused class names repeat: {list(classes)}",
                         fix="leave the semantic model's thing classes out of --stuff")
    sem_map = [-1] * len(sem_classes)
    for j, k in enumerate(stuff_idx):
        sem_map[k] = j
    inst_map = [-1] * len(inst_classes)
    for j, k in enumerate(thing_idx):
        inst_map[k] = len(stuff_idx) + j
    return classes, tuple(range(len(stuff_idx), len(classes))), tuple(sem_map), tuple(inst_map)


def branch_manifest(m: Manifest) -> dict[str, Any]:
    """What a branch's decoder needs of its bundle's manifest (no files, no models)."""
    d = m.to_dict()
    for k in ("models", "files", "provenance"):
        d.pop(k, None)
    return d


def fuse_bundles(semantic: Bundle | str | os.PathLike, instance: Bundle | str | os.PathLike, out: str | os.PathLike, *,
                 name: str | None = None, stuff: Sequence[str] | None = None, things: Sequence[str] | None = None,
                 overwrite: bool = False, options: PanopticOptions | None = None, parity_frames: int = 3,
                 category_ids: dict[str, int] | None = None) -> Bundle:
    """Fuse a semantic and an instance bundle into a panoptic bundle at ``out`` (module doc). The
    semantic side may also be a panoptic bundle with a semantic output: its semantic head is used
    (:func:`semantic_head`). ``category_ids``: a dataset's category id by class name (``edgeseg fuse
    --categories``); every fused class must have one. Without it, a panoptic source's ids are taken
    when they cover every fused class."""
    sem = semantic if isinstance(semantic, Bundle) else Bundle.open(semantic)
    inst = instance if isinstance(instance, Bundle) else Bundle.open(instance)
    given = {k.lower(): int(v) for k, v in (category_ids or {}).items()}
    ids: dict[str, int] = {}
    with tempfile.TemporaryDirectory(prefix="edgeseg-head-") as heads:
        if sem.manifest.task == "panoptic":  # its semantic head, e.g. Panoptic-DeepLab's, with a better instance model
            pan = sem.manifest
            ids = {c.lower(): k for c, k in zip(pan.classes, getattr(pan.decoder_options, "category_ids", ()) or ())}
            sem = semantic_head(sem, Path(heads) / f"{sem.name}-semantic.edgeseg")
        return _fuse(sem, inst, out, name=name, stuff=stuff, things=things, overwrite=overwrite, options=options,
                     parity_frames=parity_frames, category_ids=given or ids, strict_ids=bool(given))


def semantic_head(panoptic: Bundle | str | os.PathLike, out: str | os.PathLike, *, overwrite: bool = False) -> Bundle:
    """A panoptic bundle's semantic head as a semantic bundle: its FP32 graph cut at the ``semantic``
    output (``onnx.utils.Extractor``: the centre and offset heads go), with the same input, classes
    and palette, and default semantic decoding."""
    import onnx

    from ..structures import SemanticOptions

    b = panoptic if isinstance(panoptic, Bundle) else Bundle.open(panoptic)
    m = b.manifest
    spec = next((o for o in m.outputs if o.kind == "semantic"), None)
    if m.task != "panoptic" or spec is None:
        raise InputError(f"{b.root} ({m.task}) has no semantic output to take",
                         fix="give a semantic bundle, or a panoptic bundle with a 'semantic' output (Panoptic-DeepLab)")
    model = _fp32_onnx(b, "panoptic")
    inputs = [i.name for i in model.graph.input if i.name not in {t.name for t in model.graph.initializer}]
    head = onnx.utils.Extractor(model).extract_model(inputs, [spec.name])
    manifest = Manifest(name=f"{m.name}-semantic", task="semantic", classes=m.classes, input=m.input,
                        outputs=(OutputSpec(spec.name, "logits", spec.dtype, spec.shape),), palette=m.palette,
                        decoder=SemanticOptions().to_dict(),
                        provenance={"source": "semantic head", "panoptic": {"name": m.name, "root": str(b.root)}})
    with tempfile.TemporaryDirectory(prefix="edgeseg-head-") as tmp:
        path = Path(tmp) / "model.onnx"
        onnx.save(head, str(path))
        opset = next(o.version for o in head.opset_import if o.domain in ("", "ai.onnx"))
        with Bundle.writing(out, manifest, overwrite=overwrite) as bundle:
            bundle.add_model(ModelFile("model.onnx", "fp32", opset=opset, weights=half_weights(model)), path)
    return bundle


def _fuse(sem: Bundle, inst: Bundle, out, *, name, stuff, things, overwrite, options, parity_frames,
          category_ids: dict[str, int] | None = None, strict_ids: bool = False) -> Bundle:
    """``category_ids``: dataset category id by class name (a panoptic source's, or given); the fused
    bundle takes them when every fused class has one and ``options`` sets none. ``strict_ids``: a
    fused class without one is an error."""
    from ..export.parity import parity_images

    order = "edgeseg fuse SEMANTIC INSTANCE --out OUT"
    if sem.manifest.task == "instance" and inst.manifest.task in ("semantic", "panoptic"):
        raise InputError(f"the bundles are in the wrong order: {sem.root} is the instance bundle, {inst.root} the "
                         f"{inst.manifest.task} one", fix=f"swap them: {order}")
    if sem.manifest.task != "semantic":
        article = "an" if sem.manifest.task[:1] in "aeiou" else "a"
        raise InputError(f"{sem.root} is {article} {sem.manifest.task} bundle; the first bundle must be semantic "
                         "(or panoptic with a semantic output)", fix=order)
    if inst.manifest.task != "instance":
        raise InputError(f"{inst.root} is a {inst.manifest.task} bundle; the second bundle must be an instance one",
                         fix=order)
    resized = _check_geometry(sem.manifest.input, inst.manifest.input)
    classes, thing_classes, sem_map, inst_map = class_plan(sem.manifest.classes, inst.manifest.classes, stuff, things)
    if not stuff and not ({c.lower() for c in sem.manifest.classes} & {c.lower() for c in inst.manifest.classes}):
        import logging  # an audit: a street semantic model fused with a shapes instance model, unsaid

        logging.getLogger("edgeseg.export").warning(
            "%s and %s share no class name: every class of %s stays stuff and the things are %s's (%s); fuse models "
            "of one domain (a street semantic model with a street instance model), or name the stuff with --stuff",
            sem.name, inst.name, sem.name, inst.name, ", ".join(inst.manifest.classes[:5]))
    model = fuse_graphs(_fp32_onnx(sem, "semantic"), sem.manifest.input, _fp32_onnx(inst, "instance"), inst.manifest.input)
    base = options or PanopticOptions()
    absent = [c for c in classes if c.lower() not in (category_ids or {})]
    if strict_ids and absent:
        raise InputError(f"the categories given name no category for the fused class(es) {', '.join(absent)} "
                         f"(they name {', '.join(sorted(category_ids or {}))})",
                         fix="give the panoptic JSON of the dataset the two models were trained on (categories "
                             "are matched by name, case aside), or leave --categories out")
    if category_ids and not base.category_ids and not absent:
        base = base.replace(category_ids=tuple(category_ids[c.lower()] for c in classes))
    opts = base.replace(layout="fusion", thing_classes=thing_classes, fusion_semantic=sem_map, fusion_instance=inst_map,
                        branches={"semantic": branch_manifest(sem.manifest), "instance": branch_manifest(inst.manifest)})
    from ..decode.panoptic_fusion import check_threshold_names

    check_threshold_names(opts.class_score_thresholds, [classes[i] for i in thing_classes], "the fused bundle")
    spec = replace(inst.manifest.input, name="images", layout="NHWC", color="RGB", dtype="uint8")
    palette = _fused_palette(sem.manifest, inst.manifest, sem_map, inst_map, len(classes))
    # a semantic head cut from a panoptic bundle lives in a temporary folder: name its source instead
    head_of = sem.manifest.provenance.get("panoptic") if sem.manifest.provenance.get("source") == "semantic head" else None
    semantic = {"name": sem.name, "root": str(sem.root)} if head_of is None else {"name": sem.name, "head_of": head_of}
    prov = {"source": "fuse", "semantic": semantic, "instance": {"name": inst.name, "root": str(inst.root)}}
    with tempfile.TemporaryDirectory(prefix="edgeseg-fuse-") as tmp:
        import onnx

        path = Path(tmp) / "model.onnx"
        onnx.save(model, str(path))
        from .._ort import make_session

        session = make_session(str(path))
        x, _ = spec.preprocess(parity_images(spec.size, count=1)[0])
        ys = session.run(None, {"images": x})
        outs = tuple(OutputSpec(o.name, o.name, str(y.dtype), tuple(o.shape)) for o, y in zip(session.get_outputs(), ys))
        opset = next(o.version for o in model.opset_import if o.domain == "")
        manifest = Manifest(name=name or removesuffix(Path(out).name, ".edgeseg"), task="panoptic", classes=classes,
                            input=spec, outputs=outs, palette=palette, decoder=opts.to_dict(), provenance=prov)
        relaxed = {**({"resize": FAIL_PIXELS_RESIZED} if resized else {}),
                   **{f"float16 {what} input": FAIL_PIXELS_HALF for what, b in (("semantic", sem), ("instance", inst))
                      if b.manifest.input.dtype == "float16"}}
        parity = fusion_parity(session, manifest, sem, inst, parity_images(spec.size, count=parity_frames),
                               min(relaxed.values(), default=FAIL_PIXELS))
        if relaxed:
            parity["thresholds"]["relaxed_for"] = sorted(relaxed)
        if not parity["passed"]:
            raise ExportError(f"the fused graph disagrees with the two bundles run apart: pixel agreement "
                              f"{parity['min_pixel_agreement']:.4%}", fix="report this with both bundles")
        with Bundle.writing(out, manifest, overwrite=overwrite) as bundle:
            bundle.add_model(ModelFile("model.onnx", "fp32", opset=opset, weights=half_weights(model)), path)
            bundle.update_report("parity", parity)
    return bundle


def _fused_palette(sm: Manifest, im: Manifest, sem_map, inst_map, n: int) -> tuple[tuple[int, int, int], ...]:
    pal = np.zeros((n, 3), np.int64)
    for src, table in ((sm.palette_array, sem_map), (im.palette_array, inst_map)):
        for k, j in enumerate(table):
            if j >= 0:
                pal[j] = src[k % len(src)]
    return tuple(tuple(int(v) for v in c) for c in pal)


def _run_apart(b: Bundle, img: np.ndarray):
    """A bundle's FP32 result on one frame without a predictor (export does not depend on backends)."""
    from .._ort import make_session
    from ..decode import decode

    session = make_session(str(b.model_path("fp32")))
    x, meta = b.manifest.input.preprocess(img)
    names = [o.name for o in session.get_outputs()]
    return decode(dict(zip(names, session.run(names, {session.get_inputs()[0].name: x}))), meta, b.manifest)


def fusion_parity(session, manifest: Manifest, sem: Bundle, inst: Bundle, images: Sequence[np.ndarray],
                  threshold: float = FAIL_PIXELS) -> dict[str, Any]:
    """The fused graph + fusion decoder vs the two bundles run apart + :func:`fuse_results`."""
    from ..decode import decode
    from ..decode.panoptic_fusion import fuse_results
    from .parity import panoptic_agreement

    names = [o.name for o in session.get_outputs()]
    agreement, ious, segments = [], [], []
    for img in images:
        x, meta = manifest.input.preprocess(img)
        fused = decode(dict(zip(names, session.run(names, {"images": x}))), meta, manifest)
        apart = fuse_results(_run_apart(sem, img), _run_apart(inst, img), manifest.decoder_options, manifest)
        p, iou = panoptic_agreement(apart, fused)
        agreement.append(p)
        ious.append(iou)
        segments.append((len(apart.segments), len(fused.segments)))
    low = min(agreement, default=1.0)
    return {"images": len(images), "segments_apart_fused": segments, "min_pixel_agreement": low,
            "min_segment_iou": min(ious, default=1.0), "passed": bool(low >= threshold),
            "thresholds": {"pixel_agreement": threshold}}
