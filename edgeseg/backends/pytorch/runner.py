"""PyTorch runner: ``BACKENDS.get("torch")``.

A bundle may carry its source checkpoint (``model.safetensors``, listed in the manifest as a
``ModelFile`` with precision ``fp32`` and target ``torch``); the runner rebuilds it with
:mod:`edgeseg.models` (``load_checkpoint``). ``edgeseg export`` writes it by default: the unfolded
source model (BatchNorms as trained), checked at export to rebuild to the same logits, and held to
the ONNX graph by the export's parity check (``source_*`` numbers).

A bundle never unpickles anything, so inside a bundle only safetensors checkpoints are accepted: a
``.pt``/``.pth`` listed there is refused with a :class:`~edgeseg.errors.BundleError` naming it
(``torch.load(weights_only=True)`` still runs the unpickler). ``.pt`` checkpoints given directly to
``edgeseg export`` are read there, outside bundles, and stored as safetensors.

For export parity checks and benchmarks a runner can also wrap a live module:
``TorchRunner.from_module(model, input_spec)``.

The model's ``forward(images) -> dict[str, Tensor]`` outputs are returned as numpy under the same
names (``logits``). torch is imported only when the runner is activated.
"""
from __future__ import annotations

import importlib.util
import sys
from pathlib import Path
from typing import TYPE_CHECKING, Any, Mapping

import numpy as np

from ...errors import BackendUnavailable, BundleError, ModelError, UnsupportedError
from ..base import BACKENDS, Runner, TensorSpec
from .._util import warm_up

if TYPE_CHECKING:
    from ...bundle import Bundle
    from ...structures import InputSpec

CHECKPOINT_SUFFIXES = (".safetensors",)  # the only checkpoint format a bundle may carry
PICKLE_SUFFIXES = (".pt", ".pth", ".bin", ".pkl", ".ckpt")  # torch.save files: refused inside bundles


def bundle_checkpoint(b: "Bundle") -> Path:
    """The safetensors checkpoint a bundle carries for the torch backend, or a :class:`BundleError`:
    none there, or one in a pickle format (never unpickled from a bundle)."""
    torch_models = [m for m in b.manifest.models
                    if m.target == "torch" or m.file.endswith(CHECKPOINT_SUFFIXES + PICKLE_SUFFIXES)]
    pickled = [m.file for m in torch_models if not m.file.endswith(CHECKPOINT_SUFFIXES)]
    ckpts = [m for m in torch_models if m.file.endswith(CHECKPOINT_SUFFIXES)]
    if pickled and not ckpts:
        raise BundleError(
            f"bundle {b.root}: the torch checkpoint {pickled[0]!r} is not a safetensors file; a bundle never "
            "unpickles anything (torch.load runs the unpickler even with weights_only=True), so it is not loaded",
            fix=f"convert it: edgeseg export {b.root / pickled[0]} --out NEW.edgeseg (a .pt given to export "
                "directly is read there and stored as model.safetensors), or use --backend onnxruntime",
        )
    if not ckpts:
        raise BundleError(
            f"bundle {b.root} carries no PyTorch checkpoint (model.safetensors), so the torch backend "
            "cannot run it (it was exported with --no-checkpoint / include_checkpoint=False, or imported from ONNX)",
            fix="re-export it with 'edgeseg export' (without --no-checkpoint) from a model or checkpoint, "
                "or use --backend onnxruntime",
        )
    return b.root / ckpts[0].file


@BACKENDS.register("torch", family="torch")
class TorchRunner(Runner):
    """Runs a PyTorch segmentation model (eager mode, ``torch.inference_mode``)."""

    name = "torch"
    file_suffixes = CHECKPOINT_SUFFIXES
    model_targets = ("torch",)

    def __init__(self, model_path: Path | None = None, *, module: Any = None, input_name: str = "images",
                 input_spec: "InputSpec | None" = None, **kw: Any):
        super().__init__(Path(model_path) if model_path is not None else Path("<module>"), **kw)
        self.module = module
        spec = input_spec or (self.bundle.manifest.input if self.bundle is not None else None)
        self.input_name = spec.name if spec is not None else input_name
        if spec is not None and spec.layout != "NCHW":
            raise UnsupportedError(f"the torch backend feeds NCHW tensors; this model's input is {spec.layout}")
        batch: int | str = "N" if spec is None or spec.dynamic_batch else 1
        hw = spec.size.hw if spec is not None and spec.size is not None and spec.size_rule == "fixed" else ("H", "W")
        self.input_specs = (TensorSpec(self.input_name, spec.dtype if spec else "float32", (batch, 3, *hw)),)

    @classmethod
    def is_available(cls) -> tuple[bool, str]:
        if importlib.util.find_spec("torch") is None:
            return False, "torch is not installed; pip install torch==2.13.0 and 'edgeseg[torch]'"
        from ..._unwind import FIX, unwinder_hazard

        hazard = unwinder_hazard()
        if hazard is not None and "torch" not in sys.modules:  # torch throws internally (pybind11 iteration)
            return False, f"{hazard}; fix: {FIX}"
        return True, ""

    @classmethod
    def select_model(cls, bundle: "Bundle", precision: str = "fp32", target: str | None = None) -> Path:
        """The bundle's safetensors checkpoint (:func:`bundle_checkpoint`); ``Runner.load`` calls this.
        INT8 is refused: the checkpoint is the FP32 source model."""
        if precision == "int8":
            raise UnsupportedError("the torch backend runs the fp32 source checkpoint, not INT8",
                                   fix="use --backend onnxruntime (or tensorrt) for --precision int8")
        return bundle_checkpoint(bundle)

    @classmethod
    def from_module(cls, module: Any, input_spec: "InputSpec | None" = None, *, device: str = "cpu",
                    threads: int = 0, precision: str = "fp32") -> "TorchRunner":
        """Wrap a live ``nn.Module`` (export parity checks, benchmarks)."""
        return cls(None, module=module, input_spec=input_spec, device=device, threads=threads, precision=precision)

    # ---- lifecycle ---------------------------------------------------------------------------
    def _torch_device(self):
        import torch

        if self.device == "cuda" and not torch.cuda.is_available():
            raise BackendUnavailable("device 'cuda' asked but torch sees no CUDA GPU", fix="use --device cpu")
        return torch.device("cuda" if self.device in ("auto", "cuda") and torch.cuda.is_available() else "cpu")

    def _activate_impl(self) -> None:
        import torch

        if self.threads > 0:
            torch.set_num_threads(int(self.threads))
        self._device = self._torch_device()
        if self.precision not in ("fp32", "fp16") or (self.precision == "fp16" and self._device.type != "cuda"):
            raise UnsupportedError(f"the torch backend runs fp32 (and fp16 on CUDA), not {self.precision} on {self._device.type}")
        self._dtype = torch.float16 if self.precision == "fp16" else torch.float32
        if self.module is None:
            self.module = self._load_checkpoint()
        self.module = self.module.eval().to(self._device, self._dtype)
        warm_up(self)
        if not self.output_specs:
            self.output_specs = tuple(TensorSpec(n, "float32", ("N", "C", "H", "W")) for n in ("logits",))

    def _load_checkpoint(self):
        if self.bundle is not None and not self.model_path.name.endswith(CHECKPOINT_SUFFIXES):
            raise BundleError(f"{self.model_path}: not a safetensors file; nothing is unpickled from a bundle",
                              fix="store the weights as model.safetensors (edgeseg export does)")
        try:
            from ...models.checkpoint import load_checkpoint
        except ImportError as e:  # the model family needs torch; say what is missing
            raise BackendUnavailable(f"cannot rebuild {self.model_path.name}: edgeseg.models does not import ({e})") from None
        try:
            return load_checkpoint(self.model_path)
        except ModelError:
            raise
        except Exception as e:
            raise ModelError(f"{self.model_path}: cannot rebuild the PyTorch model: {e}") from None

    def _infer_impl(self, feed: Mapping[str, np.ndarray]) -> dict[str, np.ndarray]:
        import torch

        x = torch.from_numpy(np.ascontiguousarray(feed[self.input_name])).to(self._device, self._dtype)
        with torch.inference_mode():
            out = self.module(x)
        if isinstance(out, torch.Tensor):
            out = {"logits": out}
        if not isinstance(out, Mapping):
            raise ModelError(f"{type(self.module).__name__}.forward must return a dict of tensors, got {type(out).__name__}")
        result = {k: v.float().cpu().numpy() if v.is_floating_point() else v.cpu().numpy() for k, v in out.items()}
        if not self.output_specs:
            self.output_specs = tuple(TensorSpec(k, str(v.dtype), tuple(v.shape)) for k, v in result.items())
        return result

    def _deactivate_impl(self) -> None:
        if self.bundle is not None:  # a module we built ourselves: let it go
            self.module = None
