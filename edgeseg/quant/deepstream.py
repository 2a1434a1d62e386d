"""A semantic bundle as DeepStream's ``nvinfer`` takes it: ONNX model, label file and ``config_infer`` file.

``edgeseg deepstream BUNDLE --out DIR`` writes:

* ``model.onnx``: the bundle's float model with its normalisation in front, so that nvinfer feeds it plain pixels
  (``net-scale-factor=1``, ``offsets=0;0;0``). nvinfer's own normalisation has one scale for every channel
  (``y = net-scale-factor * (x - offset)``), which cannot hold a per-channel std such as ImageNet's; baked into
  the graph it is exact. The input keeps the bundle's size, layout (``network-input-order``) and colour order
  (``model-color-format``); a model that takes uint8 pixels gets a Cast.
* the decoder's own steps before its argmax, appended to the logits: a transpose of channels-last logits, a Cast
  of float16 scores, the class bias (``road``'s prior correction; on the log of probabilities for a bundle whose
  scores are probabilities) and a Softmax, so that nvinfer's rule (a pixel takes its best class only where that
  score is above ``segmentation-threshold``, 0 at least) labels every pixel as edgeseg's decoder does (a CRF is
  not reproduced: warned).
* ``labels.txt``: one class name per line, and ``config_infer_primary_<name>.txt`` with ``network-type=2``
  (semantic segmentation), ``infer-dims``, ``output-blob-names`` (the logits), ``maintain-aspect-ratio`` and
  ``symmetric-padding`` from the bundle's letterbox (``center`` -> symmetric), and ``scaling-filter=1``
  (bilinear, as edgeseg resizes; nvinfer's default is nearest-neighbour); the same keys in
  ``config_infer_primary_<name>.yml``, the YAML form newer DeepStream releases read (Service Maker's pipelines).
* ``--precision int8``: ``network-mode=1`` with ``int8-calib-file`` the bundle's TensorRT calibration cache (made
  by ``edgeseg quantize --target tensorrt``) for the TensorRT version given (``--trt-version``, default 10.3,
  JetPack 6 / DeepStream 7.1; 8.5.2 for JetPack 5.1 / DeepStream 6.2, 8.6 for DeepStream 6.3-7.0: TensorRT skips a
  cache whose header names another version), retargeted if the bundle has none for it. The baked normalisation writes the tensor the cache
  names as the model's input, so the cache's scales apply unchanged. TensorRT 11 has no implicit INT8.

Checked here, as plain logic: the written model fed raw pixels gives the bundle model's logits on its own
pre-processing (ONNX Runtime, a parity check before anything is kept), and ``edgeseg import`` of the written
configuration file reproduces the bundle's pre-processing and labels (``tests/quant/test_deepstream.py``).
DeepStream itself does not run here: not run on a Jetson. Not taken: instance and panoptic bundles (nvinfer needs a
custom parser library for their outputs), bundles whose graph ends in the class map (nvinfer reads scores), and
size rules other than ``fixed`` (nvinfer scales every frame to one network size); a letterbox padded with another
grey than black is written with a warning (nvinfer pads with black).
"""
from __future__ import annotations

import logging
import os
import shutil
from pathlib import Path
from typing import Any

import numpy as np

from ..errors import ExportError, InputError

log = logging.getLogger(__name__)

#: nvinfer's network-mode values
NETWORK_MODES = {"fp32": 0, "int8": 1, "fp16": 2}
RAW_INPUT = "input"


def _baked_model(model, spec):
    """``model`` with a raw-pixel input ``RAW_INPUT`` (float32, the spec's layout and colour order) whose
    ``(pixel * scale - mean) / std`` feeds the original input."""
    import onnx
    from onnx import TensorProto, helper, numpy_helper

    from ..export.graph import graph_inputs

    inp = graph_inputs(model)[0]
    name = inp.name
    mul = np.float32(spec.scale) / np.asarray(spec.std, np.float32)
    add = -np.asarray(spec.mean, np.float32) / np.asarray(spec.std, np.float32)
    shape = (1, 3, 1, 1) if spec.layout == "NCHW" else (1, 1, 1, 3)
    g = model.graph
    taken = {t.name for t in g.initializer} | {o for n in g.node for o in n.output} | {i.name for i in g.input}
    raw = RAW_INPUT if RAW_INPUT not in taken else f"edgeseg_{RAW_INPUT}"
    nodes, inits = [], []
    aliases = {name}  # the input and Identity copies of it (edgeseg's import names its input through one)
    for n in g.node:
        if n.op_type == "Identity" and n.input[0] in aliases:
            aliases.add(n.output[0])
    if spec.dtype == "uint8":  # the model normalises itself: its Casts to float read the float pixels directly
        readers = [n for n in g.node if set(n.input) & aliases and n.op_type != "Identity"]
        if not readers or not all(n.op_type == "Cast" and any(a.name == "to" and a.i == TensorProto.FLOAT
                                                                for a in n.attribute) for n in readers):
            raise InputError("the model takes uint8 pixels and reads them other than through a Cast to float: "
                             "TensorRT takes no uint8 tensor inside a network",
                             fix="export the model with a float32 input")
    else:
        inits += [numpy_helper.from_array(mul.reshape(shape), "edgeseg_ds_mul"),
                  numpy_helper.from_array(add.reshape(shape), "edgeseg_ds_add")]
        last = name if spec.dtype == "float32" else "edgeseg_ds_norm"
        nodes += [helper.make_node("Mul", [raw, "edgeseg_ds_mul"], ["edgeseg_ds_scaled"], name="edgeseg_ds_scale"),
                  helper.make_node("Add", ["edgeseg_ds_scaled", "edgeseg_ds_add"], [last], name="edgeseg_ds_normalise")]
        if spec.dtype == "float16":
            nodes.append(helper.make_node("Cast", [last], [name], to=TensorProto.FLOAT16, name="edgeseg_ds_cast"))
    h, w = spec.size.hw  # nvinfer builds for batch 1 at infer-dims
    new_inp = helper.make_tensor_value_info(raw, TensorProto.FLOAT, [1, 3, h, w] if spec.layout == "NCHW" else [1, h, w, 3])
    out = onnx.ModelProto()
    out.CopyFrom(model)
    if spec.dtype == "uint8":  # (TensorRT takes no uint8 tensor inside a network)
        kept = [n for n in out.graph.node if not (n.op_type == "Identity" and n.input[0] in aliases)]
        del out.graph.node[:]
        out.graph.node.extend(kept)
        for n in out.graph.node:
            n.input[:] = [raw if i in aliases else i for i in n.input]
        vis = [v for v in out.graph.value_info if v.name not in aliases]
        del out.graph.value_info[:]
        out.graph.value_info.extend(vis)
    keep = [i for i in out.graph.input if i.name != name]
    del out.graph.input[:]
    out.graph.input.extend([new_inp, *keep])
    for n in reversed(nodes):
        out.graph.node.insert(0, n)
    out.graph.initializer.extend(inits)
    return out, raw


def _baked_output(model, output: str, opts, num_classes: int):
    """``model`` with the semantic decoder's own steps before nvinfer's argmax appended to ``output``, which keeps
    its name: a transpose of channels-last logits to the ``[C, H, W]`` nvinfer reads, a Cast of float16 scores to
    the float32 nvinfer reads them as, the class bias (added to the logits, or to the log of probabilities, as
    edgeseg's decoder adds it), and a Softmax: nvinfer labels a pixel only where its best score is above
    ``segmentation-threshold`` (0 at least), which raw logits or log-probabilities often are not; probabilities
    keep the argmax and are always above 0 (the best of C is at least 1/C). Returns the model and the tensors
    renamed (``{output: raw}``)."""
    from onnx import TensorProto, helper, numpy_helper

    from ..export.graph import rename_tensor

    out_vi = next(o for o in model.graph.output if o.name == output)
    dims = [d.dim_value for d in out_vi.type.tensor_type.shape.dim]
    nhwc = opts.logits_layout == "NHWC" or (opts.logits_layout is None and len(dims) == 4 and dims[1] != num_classes
                                            and dims[3] == num_classes)
    half = out_vi.type.tensor_type.elem_type != TensorProto.FLOAT
    bias = np.asarray(opts.class_bias, np.float32)
    log_first = opts.scores == "probabilities" and bias.size
    steps = ([("Transpose", {"perm": [0, 3, 1, 2]})] if nhwc else []) + \
        ([("Cast", {"to": TensorProto.FLOAT})] if half else []) + ([("Log", {})] if log_first else []) + \
        ([("Add", {})] if bias.size else []) + \
        ([("Softmax", {"axis": 1})] if opts.scores == "logits" or bias.size else [])
    if not steps:  # probabilities without a bias: nvinfer's rule holds already
        return model, {}
    raw = "edgeseg_ds_raw_" + output
    rename_tensor(model.graph, output, raw)
    out_vi.name = output
    out_vi.type.tensor_type.elem_type = TensorProto.FLOAT
    cur = raw
    for k, (op, attrs) in enumerate(steps):
        dst = output if k == len(steps) - 1 else f"edgeseg_ds_out_{op.lower()}"
        inputs = [cur]
        if op == "Log":  # probabilities of 0 would be -inf: a floor far below any other class's
            model.graph.initializer.append(numpy_helper.from_array(np.array(1e-30, np.float32), "edgeseg_ds_floor"))
            model.graph.node.append(helper.make_node("Max", [cur, "edgeseg_ds_floor"], ["edgeseg_ds_floored"],
                                                     name="edgeseg_ds_floor"))
            inputs = ["edgeseg_ds_floored"]
        if op == "Add":
            model.graph.initializer.append(numpy_helper.from_array(bias.reshape(1, -1, 1, 1), "edgeseg_ds_class_bias"))
            inputs.append("edgeseg_ds_class_bias")
        model.graph.node.append(helper.make_node(op, inputs, [dst], name=f"edgeseg_ds_out_{op.lower()}", **attrs))
        cur = dst
    if nhwc:  # the declared output shape follows
        d = out_vi.type.tensor_type.shape.dim
        vals = [x.dim_value if x.HasField("dim_value") else x.dim_param for x in d]
        for x, v in zip(d, [vals[0], vals[3], vals[1], vals[2]]):
            x.Clear()
            if isinstance(v, int) and v > 0:
                x.dim_value = v
            else:
                x.dim_param = str(v or "d")
    return model, {output: raw}


def nvinfer_labels(scores: np.ndarray, threshold: float = 0.0) -> np.ndarray:
    """The class map nvinfer's segmentation parser makes of ``scores [C, H, W]`` (``fillSegmentationOutput``:
    each pixel starts at class -1 with score -1 and takes class c where its score is above both the best so far
    and ``segmentation-threshold``): what a DeepStream pipeline shows."""
    best = np.full(scores.shape[1:], -1.0, np.float32)
    cls = np.full(scores.shape[1:], -1, np.int32)
    for c in range(scores.shape[0]):
        take = (scores[c] > best) & (scores[c] > threshold)
        cls[take], best[take] = c, scores[c][take]
    return cls


def _cache(bundle, version: str, out: Path, renamed: dict[str, str]) -> Path:
    """The bundle's calibration cache for TensorRT ``version`` at ``out``, its scales following the tensors
    ``renamed`` (the raw logits keep theirs; the biased output, a new tensor, has none)."""
    from .trt_cache import CalibrationCache, read_cache, retarget_cache, trt_version_code

    code = trt_version_code(version)  # refuses TensorRT 11 with the fix
    caches = sorted(bundle.root.glob("calibration.tensorrt-*.cache"))
    if not caches:
        raise InputError(f"bundle {bundle.manifest.name!r} has no TensorRT calibration cache for INT8",
                         fix=f"edgeseg quantize {bundle.source} --target tensorrt --calib FRAMES, or --precision fp16")
    gate = (bundle.report.get("int8") or {}).get("tensorrt")
    if isinstance(gate, dict) and gate.get("met_budget") is False:  # a quantize that failed its gate still wrote them
        log.warning("bundle %r: its TensorRT calibration cache comes from an INT8 run that failed its accuracy gate "
                    "(%s drop %s > %s): nvinfer's INT8 engine may score that much worse; --precision fp16, or "
                    "edgeseg quantize %s --target tensorrt again until it passes", bundle.manifest.name,
                    gate.get("metric") or "metric", gate.get("drop"), gate.get("max_drop"), bundle.source)
    by_code = sorted((read_cache(c).version_code, c) for c in caches)
    same = [c for v, c in by_code if v == code]
    if same:
        shutil.copyfile(same[0], out)
    else:  # the newest: every version's scales are the same, only the header differs
        retarget_cache(by_code[-1][1], version, out)
    if renamed:
        cache = read_cache(out)
        out.write_text(CalibrationCache(cache.version_code, cache.algorithm,
                                        {renamed.get(k, k): v for k, v in cache.scales.items()}).to_text())
    return out


def _config(name: str, spec, output: str, num_classes: int, precision: str, color: int, raw: str,
            cache: str | None, yaml: bool = False) -> str:
    """The ``[property]`` group as a GKeyFile (``yaml=False``) or as the YAML form nvinfer reads from a ``.yml``
    file (DeepStream 6.3 and later): the same keys and values either way."""
    letterbox = spec.resize == "letterbox"
    entries = [  # (key, value) or (None, comment)
        (None, "the model normalises its own input (baked in): nvinfer feeds plain 0-255 pixels"),
        ("gpu-id", 0),
        ("net-scale-factor", "1.0"),
        ("offsets", "0;0;0"),
        ("model-color-format", color),
        ("onnx-file", "model.onnx"),
        ("labelfile-path", "labels.txt"),
        ("infer-dims", f"3;{spec.size.height};{spec.size.width}"),
        ("network-input-order", 0 if spec.layout == "NCHW" else 1),
        ("batch-size", 1),
        ("network-mode", NETWORK_MODES[precision]),
        (None, "nvinfer builds this engine at the first run if it is missing, then loads it"),
        ("model-engine-file", f"model.onnx_b1_gpu0_{precision}.engine"),
        *([("int8-calib-file", cache)] if cache else []),
        ("num-detected-classes", num_classes),
        ("network-type", 2),
        ("output-blob-names", output),
        ("segmentation-threshold", "0.0"),
        ("maintain-aspect-ratio", int(letterbox)),
        ("symmetric-padding", int(letterbox and spec.anchor == "center")),
        (None, "bilinear scaling, as edgeseg resizes (nvinfer's default is nearest-neighbour)"),
        ("scaling-filter", 1),
        ("gie-unique-id", 1),
        (None, f"edgeseg bundle: {name}; input tensor: {raw}"),
    ]
    head = "# written by edgeseg deepstream: a semantic segmentation model for Gst-nvinfer"
    if yaml:  # every value is a plain scalar: names are the bundle's own tensor names and fixed file names
        body = [f"  # {v}" if k is None else f"  {k}: {v}" for k, v in entries]
        return "\n".join([head, "property:", *body]) + "\n"
    body = [f"# {v}" if k is None else f"{k}={v}" for k, v in entries]
    return "\n".join([head, "[property]", *body]) + "\n"


def _check_opset(model: Any, trt_version: str, name: str) -> None:
    """The model's opset against what ``trt_version``'s ONNX parser takes (:func:`~edgeseg.quant.trt_ops.opset_bounds`):
    an audit's ``--trt-version 8.5.2`` (JetPack 5.1) wrote an opset-19 model that nvinfer there refuses to parse."""
    from .trt_ops import opset_bounds

    try:
        version = tuple(int(x) for x in str(trt_version).split(".")[:2])
    except ValueError:
        return  # the calibration cache's version check names a malformed one
    if len(version) < 2:
        version = (version[0], 0)
    opset = max((o.version for o in model.opset_import if o.domain in ("", "ai.onnx")), default=0)
    lo, hi = opset_bounds(version)
    if opset <= lo:
        return
    if lo == hi or (hi is not None and opset > hi):
        raise InputError(f"bundle {name!r} is ONNX opset {opset}; TensorRT {trt_version} parses opsets up to {lo}",
                         fix=f"export the model from its checkpoint with --opset {lo} (edgeseg export CHECKPOINT "
                             f"--opset {lo} ...; edgeseg check --target tensorrt-{version[0]}.{version[1]} checks it) and "
                             "write that bundle; the shipped bundles are opset 19, which TensorRT 9.2 and 10.x (JetPack "
                             "6.1, DeepStream 7.1) parse")
    log.warning("bundle %r is ONNX opset %d; TensorRT %s parses opsets up to %d or %s (not known exactly): check it with "
                "edgeseg check --target tensorrt-%d.%d", name, opset, trt_version, lo, hi, version[0], version[1])


def write_deepstream(bundle, out: str | os.PathLike, *, precision: str = "fp32", trt_version: str = "10.3",
                     overwrite: bool = False) -> Path:
    """Write ``bundle`` (a semantic :class:`~edgeseg.bundle.Bundle`) for DeepStream's nvinfer into the folder
    ``out`` (module doc); returns the configuration file. The folder is written whole or not at all."""
    import onnx

    from ..export.fuse import _fp32_onnx

    m = bundle.manifest
    if precision not in NETWORK_MODES:
        raise InputError(f"precision {precision!r}", fix=f"one of {', '.join(NETWORK_MODES)}")
    if m.task != "semantic":
        raise InputError(f"bundle {m.name!r} is {'an' if m.task[0] in 'aeiou' else 'a'} {m.task} model: nvinfer "
                         f"reads {m.task} outputs only through a "
                         "custom parser library", fix="give a semantic bundle (its logits are nvinfer's network-type=2)")
    sem = next((o for o in m.outputs if o.kind == "logits"), None)
    if sem is None:
        raise InputError(f"bundle {m.name!r} ends in the class map ({', '.join(o.name for o in m.outputs)}): nvinfer "
                         "takes class scores and picks the class itself",
                         fix="export the model without the argmax in its graph")
    spec = m.input
    if spec.size_rule != "fixed" or spec.size is None:
        raise InputError(f"bundle {m.name!r} takes frames at their own size ({spec.size_rule}): nvinfer scales every "
                         "frame to one network size", fix="import or export the model with --size WxH")
    if spec.resize == "letterbox" and spec.pad_value != 0:
        log.warning("bundle %r letterboxes with %s; nvinfer pads with black: expect small differences along the "
                    "padding", m.name, spec.pad_value)
    target = Path(out).resolve()  # '--out .' too
    if target.exists():
        if not target.is_dir():
            raise InputError(f"--out {target} is a file", fix="give a folder to write the DeepStream files into")
        if not overwrite and any(target.iterdir()):
            raise InputError(f"--out {target} already holds files",
                             fix="choose another --out, or pass --overwrite (only the files this command writes are "
                                 "replaced)")
    opts = m.decoder_options
    if opts.crf_iterations:
        log.warning("bundle %r refines its labels with a CRF (crf_iterations=%d): nvinfer takes the argmax alone",
                    m.name, opts.crf_iterations)
    original = _fp32_onnx(bundle, "the")
    _check_opset(original, trt_version, m.name)
    model, raw = _baked_model(original, spec)  # (a copy: the original stays the parity's reference)
    # the exporter's metadata (Ultralytics' names, imgsz and conventions) describes the original model's input, not
    # this one's raw pixels: an import of the written config took it for the pre-processing (4 % of labels right)
    del model.metadata_props[:]
    model.metadata_props.add(key="edgeseg", value=f"edgeseg deepstream of bundle {m.name}: raw 0-255 pixels in")
    model, renamed = _baked_output(model, sem.name, opts, len(m.classes))
    worst = _parity(bundle, original, model, raw, sem.name, opts)
    stage = target.with_name(f".{target.name}.partial")
    shutil.rmtree(stage, ignore_errors=True)
    stage.mkdir(parents=True)
    config = f"config_infer_primary_{m.name}.txt"
    try:
        onnx.save(model, str(stage / "model.onnx"))
        (stage / "labels.txt").write_text("".join(f"{c}\n" for c in m.classes))
        cache = _cache(bundle, trt_version, stage / f"calibration.tensorrt-{trt_version}.cache", renamed).name \
            if precision == "int8" else None
        for yaml in (False, True):  # the key file, and the YAML form DeepStream 6.3+ also reads
            (stage / (config if not yaml else config[:-4] + ".yml")).write_text(
                _config(m.name, spec, sem.name, len(m.classes), precision, 0 if spec.color == "RGB" else 1, raw,
                        cache, yaml=yaml))
        if not target.exists():
            os.replace(stage, target)
        else:  # only this command's files are replaced; an engine nvinfer built from the old model goes
            for old in target.glob("model.onnx_b*_gpu*.engine"):
                old.unlink()
            for f in sorted(stage.iterdir()):
                os.replace(f, target / f.name)
            shutil.rmtree(stage, ignore_errors=True)
    except BaseException:
        shutil.rmtree(stage, ignore_errors=True)
        raise
    log.info("parity of the baked pre- and post-processing: max |score difference| %.2g", worst)
    return target / config


def _parity(bundle, original, model, raw: str, output: str, opts) -> float:
    """The largest difference between the written model on raw pixels and the bundle's model ``original`` on its own
    pre-processing followed by the steps :func:`_baked_output` appended; and nvinfer's labels of the written
    model's scores (:func:`nvinfer_labels`) must equal the argmax: an :class:`ExportError` otherwise."""
    from .._ort import make_session
    from ..data.synthetic import SceneGenerator

    spec = bundle.manifest.input
    ref = make_session(original.SerializeToString(), name="bundle")
    new = make_session(model.SerializeToString(), name="deepstream")
    worst = 0.0
    for seed in (1, 2):
        f = SceneGenerator(spec.size, seed=seed).render_semantic(0)[0]
        x, _ = spec.preprocess(f)
        pixels = f[..., ::-1] if spec.color == "BGR" else f
        pixels = pixels.transpose(2, 0, 1) if spec.layout == "NCHW" else pixels
        a = ref.run([output], {ref.get_inputs()[0].name: x})[0].astype(np.float32)
        b = new.run([output], {raw: np.ascontiguousarray(pixels[None], np.float32)})[0].astype(np.float32)
        if b.shape != a.shape:  # channels-last logits, transposed for nvinfer
            a = a.transpose(0, 3, 1, 2)
        bias = np.asarray(opts.class_bias, np.float32).reshape(1, -1, 1, 1) if opts.class_bias else None
        if bias is not None:  # the decoder's bias, as the graph now adds it
            a = (np.log(np.maximum(a, 1e-30)) if opts.scores == "probabilities" else a) + bias
        if opts.scores == "logits" or bias is not None:
            e = np.exp(a - a.max(axis=1, keepdims=True))
            a = e / e.sum(axis=1, keepdims=True)
        diff = float(np.abs(a - b).max())
        worst = max(worst, diff)
        labels = nvinfer_labels(b[0])
        # pixels whose two best scores are closer than the baked graph's rounding may take either class (an untrained
        # model's near-uniform scores: every pixel, and a false "report this" before); the others must agree
        top2 = np.sort(a[0], axis=0)[-2:]
        decided = top2[1] - top2[0] > 2 * diff
        none, differ = (labels < 0).mean(), ((labels != a[0].argmax(axis=0)) & decided & (labels >= 0)).mean()
        if none > 1e-3 or differ > 1e-3:
            raise ExportError(f"nvinfer would label {none:.1%} of pixels as no class and {differ:.1%} otherwise than "
                              "the bundle's argmax", fix="report this: the scores were not written as probabilities")
    half = "float16" in (spec.dtype, getattr(bundle.manifest.outputs[0], "dtype", ""))  # rounded inputs differ more
    if worst > (1e-2 if half else 1e-3) * max(1.0, float(np.abs(a).max())):
        raise ExportError(f"the model with its pre- and post-processing baked in differs from the bundle's by "
                          f"{worst:.3g}", fix="report this: the bundle's input spec could not be written into the graph")
    return worst


__all__ = ["NETWORK_MODES", "write_deepstream"]
