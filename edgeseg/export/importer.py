"""``import_onnx``: an ONNX model made elsewhere (any exporter, opset >= 9) -> a bundle.

What happens:

1. load and check the file (a corrupt file or a non-ONNX file fails with the path named);
2. opset < 9 is refused; 9..12 is upgraded to 13 with ``onnx.version_converter`` (INT8 Q/DQ with
   per-channel scales needs 13), keeping the original if the converter cannot;
3. the single image input is checked against the declared :class:`InputSpec` (layout NCHW/NHWC,
   3 channels, fixed size, batch 1 or dynamic); its dtype is taken from the graph;
4. ONNX Runtime loads the graph (an op it lacks fails here, named) and runs it once on a
   real-looking frame preprocessed with ``InputSpec.preprocess`` — exactly the runtime's path;
5. the output kind is detected from that run: float ``[N, C, H, W]`` logits, ``[N, H, W, C]``
   logits (a Transpose is appended), or integer labels ``[N, H, W]`` / ``[N, 1, H, W]`` (Squeeze and
   Cast to uint8 are appended). The bundle's graph always reads ``images`` and writes ``logits`` or
   ``labels`` (Identity nodes keep the original names inside); the original names go to provenance.
   Logits written by a final ``Softmax`` are probabilities: the manifest's decoder says so
   (``SemanticOptions.scores``), so that the confidence is the chosen probability. A MaskFormer or
   Mask2Former (class and mask logits per query) gets its semantic inference appended instead
   (:mod:`edgeseg.export.import_query`).
"""
from __future__ import annotations

import functools
import logging
import os
import tempfile
from collections.abc import Sequence
from dataclasses import replace
from pathlib import Path

import numpy as np

from .._ort import ir_version_limit, make_session
from ..bundle import Bundle
from ..errors import ExportError, InputError, UnsupportedError
from ..structures import ImageShape, InputSpec, SemanticOptions
from ..structures.manifest import Manifest, ModelFile, OutputSpec
from .graph import clean_graph, default_opset, dims, elem_dtype, graph_inputs, half_weights, quantized_ops, save_single_file

log = logging.getLogger(__name__)
MIN_OPSET = 9
TARGET_OPSET = 13
_INPUT_DTYPES = ("float32", "float16", "uint8")
_LABEL_DTYPES = ("uint8", "int8", "int16", "int32", "int64")


def _missing_external_data(path: Path) -> list[str]:
    """The external-data files the ONNX graph at ``path`` names that are not beside it ([] when it has none,
    or cannot be read without its weights either)."""
    import onnx

    try:
        graph = onnx.load(str(path), load_external_data=False)
    except Exception:  # noqa: BLE001 - not a readable graph at all: the caller's message says so
        return []
    locations = {e.value for t in graph.graph.initializer if t.data_location == onnx.TensorProto.EXTERNAL
                 for e in t.external_data if e.key == "location"}
    return sorted(loc for loc in locations if not (path.parent / loc).is_file())


def load_onnx_checked(path: Path):
    """Load and structurally check an ONNX file, or raise ExportError naming it."""
    import onnx

    if not path.is_file():
        raise InputError(f"ONNX file {path} not found")
    try:
        model = onnx.load(str(path))
    except Exception as e:  # protobuf DecodeError and friends
        missing = _missing_external_data(path)
        if missing:  # weights saved beside the graph (models over 2 GB, or save_as_external_data=True)
            raise ExportError(f"{path}: its weights are stored in a separate file that is not beside it: "
                              f"{', '.join(missing)}",
                              fix=f"copy {missing[0]} into {path.parent} with model.onnx (the ONNX file holds only the graph)"
                              ) from None
        raise ExportError(f"{path}: not a valid ONNX file ({type(e).__name__}: {str(e)[:200]})",
                          fix="check the file was copied completely; re-export it") from None
    if not model.graph.node:
        raise ExportError(f"{path}: the ONNX graph is empty (not a model, or a corrupt file)")
    if not model.graph.output:  # ONNX Runtime's "At least one output should be requested" escaped as a traceback
        raise ExportError(f"{path}: the ONNX graph declares no outputs", fix="re-export it with its outputs named "
                          "(torch.onnx.export(..., output_names=[...])); a graph cut by hand needs graph.output set")
    try:
        onnx.checker.check_model(model)
    except Exception as e:  # onnx.checker.ValidationError
        raise ExportError(f"{path}: the ONNX model is invalid: {str(e).splitlines()[0][:300]}",
                          fix="re-export it with a current exporter (torch.onnx.export, opset 13 or newer), or repair it "
                              "with onnx.checker.check_model's message") from None
    return model


def upgrade_opset(model, path: Path) -> tuple[object, int, str | None]:
    """(model, opset, note): refuse < 9, upgrade 9..12 to 13 where the converter can."""
    opset = default_opset(model)
    if opset < MIN_OPSET:
        raise ExportError(f"{path}: opset {opset} is too old (edgeseg imports opset {MIN_OPSET} or newer)",
                          fix="re-export the model with a newer opset (e.g. opset_version=13 or later)")
    if opset >= TARGET_OPSET:
        return model, opset, None
    from onnx import version_converter

    try:
        converted = version_converter.convert_version(model, TARGET_OPSET)
        import onnx

        onnx.checker.check_model(converted)
        return converted, TARGET_OPSET, None
    except Exception as e:  # the converter lacks adapters for some ops
        note = f"kept opset {opset}: the upgrade to {TARGET_OPSET} failed ({str(e).splitlines()[0][:200]})"
        log.warning("%s: %s", path, note)
        return model, opset, note


def onnx_input_size(path: str | os.PathLike, layout: str) -> ImageShape | None:
    """The static (height, width) of a model's image input for ``layout``, or None when dynamic (the file is
    read once per version: the import's steps each ask)."""
    p = Path(path)
    st = p.stat() if p.is_file() else None
    return _input_size(str(p), st.st_mtime_ns if st else 0, st.st_size if st else 0, layout)


@functools.lru_cache(maxsize=8)
def _input_size(path: str, mtime_ns: int, size: int, layout: str) -> ImageShape | None:
    return model_input_size(load_onnx_checked(Path(path)), layout)


def model_input_size(model, layout: str) -> ImageShape | None:
    """:func:`onnx_input_size` of a loaded graph."""
    d = dims(graph_inputs(model)[0])
    if len(d) != 4:
        return None
    h, w = (d[2], d[3]) if layout == "NCHW" else (d[1], d[2])
    return ImageShape(h, w) if isinstance(h, int) and isinstance(w, int) and h > 0 and w > 0 else None


def _reconcile_spec(model, spec: InputSpec, path: Path) -> tuple[InputSpec, str]:
    inputs = graph_inputs(model)
    if len(inputs) != 1:
        names = [i.name for i in inputs]
        if any("task" in n.lower() for n in names):  # OneFormer conditions its queries on a tokenised task text
            raise ExportError(f"{path}: a segmentation model takes one image input, this one takes {names}: a task "
                              "token input (OneFormer) is not supported",
                              fix="export OneFormer with its task fixed inside the graph (a wrapper module passing "
                                  "the processor's task_inputs for 'the task is panoptic' as a constant), then import "
                                  "the image-only model")
        raise ExportError(f"{path}: a segmentation model takes one image input, this one takes {names}",
                          fix="export the model with the image as its only input (other inputs as constants or "
                              "initializers)")
    inp = inputs[0]
    shape, dtype = dims(inp), elem_dtype(inp)
    if dtype not in _INPUT_DTYPES:
        raise ExportError(f"{path}: input {inp.name!r} is {dtype}; edgeseg feeds {', '.join(_INPUT_DTYPES)}",
                          fix="re-export with a float32 (or float16, uint8) image input; bfloat16 weights inside the "
                              "graph are fine behind a Cast" if dtype == "bfloat16" else
                          "re-export with a float32, float16 or uint8 image input")
    if len(shape) != 4:
        raise ExportError(f"{path}: input {inp.name!r} has shape {list(shape)}; expected a 4-D image batch ({spec.layout})")
    c, (h, w) = (shape[1], shape[2:]) if spec.layout == "NCHW" else (shape[3], shape[1:3])
    if isinstance(c, int) and c != 3:
        other = "NHWC" if spec.layout == "NCHW" else "NCHW"
        oc = shape[3] if spec.layout == "NCHW" else shape[1]
        if c == 1 and oc != 3:  # a grey model: not a layout mix-up
            raise InputError(f"{path}: input {inp.name!r} {list(shape)} takes one (grey) channel; edgeseg feeds colour "
                             "frames (3 channels)", fix="re-export the model with a 3-channel input (e.g. the grey "
                                                         "channel repeated: torch's x.mean(1, keepdim=True) at its start)")
        raise InputError(f"{path}: input {inp.name!r} {list(shape)} does not have 3 channels in {spec.layout} layout",
                         fix=f"is it {other}? pass --layout {other}")
    fixed = [isinstance(v, int) and v > 0 for v in (h, w)]
    if all(fixed) and spec.size_rule == "fixed" and spec.size != ImageShape(h, w):
        raise InputError(f"{path}: input {inp.name!r} is fixed at {w}x{h} (WxH) but the declared size is {spec.size}",
                         fix=f"pass --size {w}x{h}")
    if all(fixed) and spec.size_rule != "fixed":
        raise InputError(f"{path}: input {inp.name!r} is fixed at {w}x{h}; size rule {spec.size_rule!r} would feed other sizes",
                         fix="use a fixed size rule")
    batch = shape[0]
    if isinstance(batch, int) and batch > 1:
        raise ExportError(f"{path}: input {inp.name!r} has a fixed batch of {batch}; edgeseg feeds one image at a time",
                          fix="re-export with batch 1 or a dynamic batch axis")
    if dtype != spec.dtype:
        log.info("%s: input dtype taken from the graph: %s (declared %s)", path, dtype, spec.dtype)
    return replace(spec, name="images", dtype=dtype, dynamic_batch=not isinstance(batch, int) or batch <= 0), inp.name


def _session_for(model, path: Path):
    """An ORT session for ``model`` (:func:`edgeseg._ort.make_session`, CPU); a model saved by a newer
    onnx package whose IR version this ONNX Runtime does not know is retried at the highest IR version
    it reads (the opset decides which ops exist, the IR version only the file format)."""
    try:
        return make_session(model.SerializeToString(), name=str(path))
    except UnsupportedError as e:
        limit = ir_version_limit(e)
        if limit is None:
            raise
        log.info("%s: IR version %s lowered to %s for this ONNX Runtime", path, *limit)
        model.ir_version = limit[1]
        return make_session(model.SerializeToString(), name=str(path))


def _detect_output(y: np.ndarray, name: str, num_classes: int, path: Path) -> tuple[str, list[tuple[str, dict]]]:
    """(kind, nodes to append) for an output sample ``y`` from a batch-1 run."""
    dt = str(y.dtype)
    if dt.startswith("float") and y.ndim == 4 and num_classes == 1 and 1 in (y.shape[1], y.shape[3]):
        raise ExportError(f"{path}: output {name!r} ({dt} {list(y.shape)}) has one score channel: a binary (sigmoid) "
                          "model, whose argmax would label every pixel class 0",
                          fix="pass --classes 2 (or --names background,NAME): edgeseg reads the channel as background "
                              "and foreground (a logit above 0, or a Sigmoid's probability above 0.5, is the class)")
    if dt.startswith("float") and y.ndim == 4:
        if y.shape[1] == num_classes:
            return "logits", []
        if y.shape[3] == num_classes:
            return "logits", [("Transpose", {"perm": [0, 3, 1, 2]})]
    if dt in _LABEL_DTYPES and y.ndim in (3, 4):
        if num_classes > 256:
            raise ExportError(f"{path}: label output {name!r} with {num_classes} classes does not fit uint8")
        nodes: list[tuple[str, dict]] = []
        if y.ndim == 4:
            if y.shape[1] == 1:
                nodes.append(("Squeeze", {"axes": 1}))
            elif y.shape[3] == 1:
                nodes.append(("Squeeze", {"axes": 3}))
            else:
                raise ExportError(f"{path}: integer output {name!r} {list(y.shape)} is not a label map [N, H, W]")
        if dt != "uint8":
            nodes.append(("Cast", {"to": 2}))
        return "labels", nodes
    raise ExportError(
        f"{path}: output {name!r} ({dt} {list(y.shape)}) is neither logits [N, {num_classes}, H, W] / [N, H, W, {num_classes}] "
        f"nor integer labels [N, H, W]",
        fix="check --classes matches the model's number of classes",
    )


def _rewire(model, in_name: str, out_name: str, kind: str, appended: list[tuple[str, dict]], elem: int,
            shape: list[int | str], opset: int) -> None:
    """Make the graph read ``images`` and write ``kind``: Identity/appended nodes at the edges."""
    import onnx
    from onnx import helper

    from .graph import rename_tensor

    g = model.graph
    taken = {o for n in g.node for o in n.output} | {i.name for i in g.initializer} | {i.name for i in g.input}

    def aside(old: str) -> str:  # a tensor of a name edgeseg's IO takes moves aside, wherever it is defined
        inner = next(f"edgeseg_inner_{old}{k or ''}" for k in range(len(taken) + 1)
                     if f"edgeseg_inner_{old}{k or ''}" not in taken)
        rename_tensor(g, old, inner)
        for vi in [*g.value_info, *g.input]:  # type records, and old IR's initializers listed as inputs
            if vi.name == old:
                vi.name = inner
        taken.add(inner)
        return inner

    for new in ("images", kind):
        # the output already named `kind` moves aside too when nodes are appended after it (a Cast, a Squeeze, an NHWC
        # Transpose), which write `kind`: ONNX Runtime refused the graph, "Duplicate definition of name (labels)"
        if new in taken and (new != (in_name if new == "images" else out_name) or new == kind and appended):
            moved = aside(new)
            in_name = moved if in_name == new else in_name
            out_name = moved if out_name == new else out_name
    # names of nodes and tensors added here are fresh ones: a model edgeseg wrote before (`edgeseg deepstream`'s,
    # imported again) already holds edgeseg_input, edgeseg_output, ... (ONNX Runtime refused the repeated node name)
    used = taken | {n.name for n in g.node if n.name}

    def fresh(base: str) -> str:
        name = next(f"{base}{'' if k == 0 else f'_{k + 1}'}" for k in range(len(used) + 1)
                    if f"{base}{'' if k == 0 else f'_{k + 1}'}" not in used)
        used.add(name)
        return name

    if in_name != "images":
        inp = next(i for i in model.graph.input if i.name == in_name)
        inp.name = "images"
        model.graph.node.insert(0, helper.make_node("Identity", ["images"], [in_name], name=fresh("edgeseg_input")))
    current = out_name
    for i, (op, attrs) in enumerate(appended):
        target = kind if i == len(appended) - 1 else fresh(f"edgeseg_{op.lower()}_{i}")
        inputs = [current]
        if op == "Squeeze" and opset < 13:
            attrs = {"axes": [attrs["axes"]]}
        elif op == "Squeeze":  # opset >= 13 takes axes as an input
            axes = fresh(f"edgeseg_squeeze_axes_{i}")
            model.graph.initializer.append(onnx.numpy_helper.from_array(np.array([attrs["axes"]], np.int64), axes))
            inputs, attrs = [current, axes], {}
        model.graph.node.append(helper.make_node(op, inputs, [target], name=fresh(f"edgeseg_{op.lower()}_{i}"), **attrs))
        current = target
    if current != kind:
        model.graph.node.append(helper.make_node("Identity", [current], [kind], name=fresh("edgeseg_output")))
    del model.graph.output[:]
    model.graph.output.append(helper.make_tensor_value_info(kind, onnx.TensorProto.UINT8 if kind == "labels" else elem, shape))


def _out_elem(session, index: int = 0) -> int:
    import onnx

    return {"tensor(float)": onnx.TensorProto.FLOAT, "tensor(float16)": onnx.TensorProto.FLOAT16,
            "tensor(double)": onnx.TensorProto.DOUBLE}.get(session.get_outputs()[index].type, onnx.TensorProto.FLOAT)


def _out_shape(y: np.ndarray, kind: str, appended: list[tuple[str, dict]], spec: InputSpec) -> list[int | str]:
    """The final output's shape (batch symbolic when dynamic; spatial symbolic unless the size is fixed)."""
    s: list[int | str] = list(y.shape)
    ops = [op for op, _ in appended]
    if "Transpose" in ops:  # NHWC logits -> NCHW
        s = [s[0], s[3], s[1], s[2]]
    if "Squeeze" in ops:  # [N, 1, H, W] or [N, H, W, 1] -> [N, H, W]
        s = [s[0], s[2], s[3]] if s[1] == 1 else [s[0], s[1], s[2]]
    if spec.dynamic_batch:
        s[0] = "batch"
    if spec.size_rule != "fixed":
        s[-2:] = ["height", "width"]
    return s


_AUX = ("aux", "auxiliary", "deep_sup", "dsn")


def _main_output(names: list[str], path: Path) -> int:
    """Which output of a semantic model is its prediction: the first one not named like an auxiliary head
    (torchvision's segmentation models export ``out`` and ``aux``; some exporters list ``aux`` first);
    the others are dropped, which the log says."""
    main = next((k for k, n in enumerate(names) if not any(a in n.lower() for a in _AUX)), 0)
    if len(names) > 1:
        log.warning("%s: %d outputs (%s); taking %r as the segmentation, dropping the others", path, len(names),
                    ", ".join(names), names[main])
    return main


def prepared(path: Path, input_spec: InputSpec) -> tuple:
    """``(model, original opset, opset, opset note, spec, input name, ONNX Runtime session, test frame)``:
    the file loaded and checked, its opset upgraded, its input reconciled with ``input_spec``, a session
    and a preprocessed test frame to run it on (the semantic and panoptic imports start here)."""
    model = load_onnx_checked(path)
    original_opset = default_opset(model)
    model, opset, note = upgrade_opset(model, path)
    spec, in_name = _reconcile_spec(model, input_spec, path)
    session = _session_for(model, path)
    return model, original_opset, opset, note, spec, in_name, session, _smoke_feed(spec)


def _smoke_feed(spec: InputSpec) -> np.ndarray:
    from .parity import parity_images

    size = spec.size or ImageShape(256, 256)
    return spec.preprocess(parity_images(size, 1, seed=3)[0])[0]


def import_onnx(onnx_path: str | os.PathLike, out: str | os.PathLike, *, task: str = "semantic",
                classes: int | Sequence[str] | None, input_spec: InputSpec | None, palette=None, name: str | None = None,
                overwrite: bool = False, input_overrides: dict | None = None, preprocess: str | None = None,
                things: Sequence[str | int] | None = None, offset_order: str = "yx", offset_scale: float = 1.0,
                panoptic_options: dict | None = None, query_options: dict | None = None,
                hf_config=None) -> Bundle:
    """Turn an ONNX segmentation model made elsewhere into a bundle (see the module docstring;
    ``task="instance"``: :func:`edgeseg.export.import_instance.import_instance_onnx`, where
    ``preprocess`` names an exporter's conventions and ``input_overrides`` change single fields of them;
    ``task="panoptic"``: :func:`edgeseg.export.import_panoptic.import_panoptic_onnx`, with ``things``, the
    thing classes, ``offset_order``, ``offset_scale`` and ``panoptic_options``). ``query_options``
    (mask-classification models, :mod:`edgeseg.export.import_query`): ``query_convention`` and
    ``score_threshold`` for the instance and panoptic tasks; an instance import also takes ``things``, and
    ``hf_config`` (:func:`edgeseg.export.hf_config.huggingface_config`), whose names and normalisation it uses
    for a mask-classification model only."""
    from .names import _palette, normalize_classes

    path = Path(onnx_path)
    if task == "instance":
        from .import_instance import import_instance_onnx

        return import_instance_onnx(path, out, classes=classes, input_spec=input_spec, palette=palette, name=name,
                                    overwrite=overwrite, input_overrides=input_overrides, preprocess=preprocess,
                                    things=things, query_options=query_options, hf_config=hf_config)
    if task == "panoptic":
        from .import_panoptic import import_panoptic_onnx

        if classes is None or input_spec is None or not things:
            raise InputError(f"import of {path}: a panoptic model needs its classes, thing classes and input spec",
                             fix="pass --classes (or --names), --things NAME,... and --size WxH")
        return import_panoptic_onnx(path, out, classes=classes, things=things, input_spec=input_spec,
                                    offset_order=offset_order, offset_scale=offset_scale, palette=palette, name=name,
                                    overwrite=overwrite, options={**(panoptic_options or {}), **(query_options or {})})
    if input_overrides or preprocess:
        raise InputError("input_overrides and preprocess apply to instance imports; a semantic import takes a whole "
                         "input_spec", fix="pass --mean/--std/--scale/--resize/--size for a semantic model")
    if query_options or things:
        raise InputError("things and query_options apply to instance and panoptic imports",
                         fix="drop --things, --query-convention and --score-threshold for a semantic model")
    if task != "semantic":
        raise UnsupportedError(f"import of {task!r} models is not supported yet",
                               fix="use --task semantic, instance or panoptic")
    from .import_instance import ultralytics_semantic

    ultra = ultralytics_semantic(path)
    if classes is None or input_spec is None:  # an Ultralytics semantic export carries both
        if ultra is not None:
            classes = classes if classes is not None else ultra["names"]
            size = onnx_input_size(path, "NCHW") or ultra["size"]
            if input_spec is None and size is not None:
                input_spec = InputSpec(**ultra["input"], size=size)
    if classes is None or input_spec is None:
        raise InputError(f"import of {path}: a semantic model needs its classes and input spec",
                         fix="pass --classes N (or a names file) and --size WxH")
    from .graph import Appender
    from .import_query import detect_query_outputs, prepare, query_to_semantic, require_opset, semantic_size

    names = normalize_classes(classes, None, f"import of {path}")
    model, original_opset, opset, note, spec, in_name, session, feed = prepared(path, input_spec)
    outputs = session.run(None, {in_name: feed})
    if ultra is not None and len(names) == 1:  # a one-class model: Ultralytics' predictor labels background and the class
        names, palette = ("background", *names), None
    query = detect_query_outputs({o.name: y for o, y in zip(session.get_outputs(), outputs)}, len(names), str(path))
    probabilities = False
    if query is not None:  # MaskFormer / Mask2Former: their semantic inference appended (import_query)
        require_opset(opset, path)
        original_output: object = {"class_logits": query.classes, "mask_logits": query.masks}
        query, dtypes = prepare(model, query, ("logits",))
        app = Appender(model.graph, "edgeseg_query_")
        hw = semantic_size(query, spec.size, str(path))
        out_name = app.node("Identity", [query_to_semantic(app, query, dtypes, in_name, spec.layout, hw)])
        app.flush()
        kind, appended = "logits", []
        hw = hw or (feed.shape[2:4] if spec.layout == "NCHW" else feed.shape[1:3])
        shape = _out_shape(np.zeros((1, len(names), *hw), np.float32), kind, appended, spec)
        _rewire(model, in_name, out_name, kind, appended, 1, shape, opset)  # 1: onnx.TensorProto.FLOAT
    else:
        pick = _main_output([o.name for o in session.get_outputs()], path)
        out_name = original_output = session.get_outputs()[pick].name
        y = outputs[pick]
        axis = 1 if y.ndim == 4 and y.shape[1] == 1 else 3 if y.ndim == 4 and y.shape[3] == 1 else None
        sigmoid = False
        if len(names) == 2 and y.dtype.kind == "f" and axis is not None:
            # a binary model's one channel, given two classes (Ultralytics' one-class models, anyone's sigmoid head):
            # a logit x becomes [-x, x], whose argmax is the class exactly where x > 0 (ties: background); a
            # probability p (a graph ending in Sigmoid) becomes [1 - p, p], the class where p > 0.5
            from onnx import helper

            from .graph import fresh_node_name

            producer = next((n for n in model.graph.node if out_name in n.output), None)
            sigmoid = producer is not None and producer.op_type == "Sigmoid"
            neg, both = f"{out_name}_edgeseg_background", f"{out_name}_edgeseg_binary"
            if sigmoid:
                from onnx import numpy_helper

                one = f"{out_name}_edgeseg_one"
                model.graph.initializer.append(numpy_helper.from_array(np.ones((), y.dtype), one))
                first = helper.make_node("Sub", [one, out_name], [neg], name=fresh_node_name(model.graph, "edgeseg_binary_bg"))
            else:
                first = helper.make_node("Neg", [out_name], [neg], name=fresh_node_name(model.graph, "edgeseg_binary_neg"))
            model.graph.node.append(first)
            model.graph.node.append(helper.make_node("Concat", [neg, out_name], [both], axis=axis,
                                                     name=fresh_node_name(model.graph, "edgeseg_binary")))
            out_name = both
            outputs[pick] = np.concatenate([1 - y if sigmoid else -y, y], axis=axis)
            log.warning("%s: one score channel read as two classes, %s and %s: %s", path, names[0], names[1],
                        "1 - p and p (the graph ends in a Sigmoid: the class where p > 0.5)" if sigmoid else
                        "-x and x (the class where the logit is above 0)")
        kind, appended = _detect_output(outputs[pick], out_name, len(names), path)
        # a model ending in a Softmax gives probabilities: the decoder's confidence is then the chosen one itself
        producer = next((n for n in model.graph.node if out_name in n.output), None)
        probabilities = kind == "logits" and (sigmoid or (producer is not None and producer.op_type == "Softmax"))
        shape = _out_shape(outputs[pick], kind, appended, spec)
        _rewire(model, in_name, out_name, kind, appended, _out_elem(session, pick), shape, opset)
    model = clean_graph(model)
    session = _session_for(model, path)
    y = session.run(None, {"images": feed})[0]
    smoke = _smoke_report(y, kind, len(names), path)
    _check_output_geometry(y, kind, feed, spec, path)
    batch: int | str = "batch" if spec.dynamic_batch else 1
    manifest = Manifest(
        name=name or path.stem, task=task, classes=names, input=spec,
        outputs=(OutputSpec(kind, kind, str(y.dtype), (batch, *y.shape[1:])),), palette=_palette(palette, len(names)),
        decoder=SemanticOptions(scores="probabilities").to_dict() if query is not None or probabilities else {},
        provenance={"source": "onnx", "file": path.name, "original_opset": original_opset, "opset": opset,
                    "original_input": in_name, "original_output": original_output,
                    **({"exporter": ultra["exporter"]} if ultra is not None else {}),
                    "producer": f"{model.producer_name} {model.producer_version}".strip()},
    )
    return write_imported(model, out, manifest, opset, {"smoke": smoke, "opset_note": note,
                                                        "appended_nodes": [op for op, _ in appended],
                                                        **({"source_layout": "mask-classification",
                                                            "queries": query.num_queries} if query else {})},
                          overwrite)


def write_imported(model, out: str | os.PathLike, manifest: Manifest, opset: int, report: dict,
                   overwrite: bool) -> Bundle:
    """The rewired graph saved as one checked file, and the bundle written with it and the import report
    (every import task ends here)."""
    import onnx

    ops = quantized_ops(model)
    if ops:  # runs as given; `edgeseg quantize` refuses it (it needs the float model), and info says so
        report = {**report, "quantized": f"{', '.join(ops)}: quantized already (Q/DQ or integer ops), not a float model"}
        log.warning("%s: the model is quantized already (%s): it runs as given; edgeseg quantize needs the float "
                    "model to calibrate", manifest.name, ", ".join(ops))
    with tempfile.TemporaryDirectory(prefix="edgeseg-import-") as tmp:
        saved = save_single_file(model, Path(tmp) / "model.onnx")
        onnx.checker.check_model(str(saved))
        with Bundle.writing(out, manifest, overwrite=overwrite) as bundle:
            bundle.add_model(ModelFile("model.onnx", "fp32", opset=opset, weights=half_weights(model)), saved)
            bundle.update_report("import", report)
    return bundle


def _check_output_geometry(y: np.ndarray, kind: str, feed: np.ndarray, spec: InputSpec, path: Path) -> None:
    """What a semantic output's shape and values say about the import, on the test frame (session 50's fuzzing): a
    batch other than the input's is refused (imported, every frame failed "got a batch of 2"); an output whose height
    and width are the input's swapped, on a non-square input, and scores that do not vary over the frame (a constant
    model: one class everywhere) are said."""
    fed = feed.shape[2:4] if spec.layout == "NCHW" else feed.shape[1:3]
    if y.shape[0] != feed.shape[0]:
        raise ExportError(f"{path}: the model gives {y.shape[0]} outputs for the {feed.shape[0]} image it was fed "
                          f"(output {list(y.shape)})", fix="export the model with batch 1 (or a dynamic batch) in and out")
    hw = tuple(y.shape[2:4]) if kind == "logits" else tuple(y.shape[1:3])
    aspect, shown = fed[0] / fed[1], (hw[0] / hw[1] if len(hw) == 2 and hw[1] else 0.0)
    if abs(aspect - 1) > 0.1 and abs(shown * aspect - 1) < 0.05 and abs(shown / aspect - 1) > 0.1:  # (any stride)
        log.warning("%s: the output is %dx%d (HxW) for a %dx%d input: height and width look swapped (a transposed "
                    "output is decoded turned: check the export's axes)", path, hw[0], hw[1], fed[0], fed[1])
    if kind == "logits" and y.ndim == 4 and y.shape[2] * y.shape[3] > 1 and \
            bool((y.max(axis=(2, 3)) == y.min(axis=(2, 3))).all()):
        log.warning("%s: the model's scores are the same at every pixel of the test frame: it gives one class "
                    "everywhere (a broken or untrained export?)", path)


def _smoke_report(y: np.ndarray, kind: str, num_classes: int, path: Path) -> dict:
    if kind == "logits":
        if not np.isfinite(y).all():
            raise ExportError(f"{path}: the model produced non-finite logits on a test frame",
                              fix="check the pre-processing it was given (--mean/--std/--scale, or a config's "
                                  "net-scale-factor/offsets or rescale_factor: a huge factor overflows), then the "
                                  "export itself (a float16 overflow)")
        labels = y.argmax(1)
    else:
        labels = y
        if int(labels.max(initial=0)) >= num_classes:
            raise ExportError(f"{path}: the model predicted label {int(labels.max())} but only {num_classes} classes were declared",
                              fix="check --classes")
    return {"output_shape": list(y.shape), "dtype": str(y.dtype), "classes_seen": int(len(np.unique(labels)))}
