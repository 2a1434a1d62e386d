"""edgeseg: take image-segmentation models to the edge.

``import edgeseg`` is cheap: it imports neither torch nor any runtime nor GStreamer. The entry
points below are resolved lazily on first use.

    predictor = edgeseg.load("road")                 # a bundle path or a shipped name
    result = predictor(rgb_image)                    # -> SemanticResult at the image's size
    for frame, result in edgeseg.stream("file:///path/video.mp4", "road"):
        ...
"""
from __future__ import annotations

from typing import TYPE_CHECKING

from ._lazy import lazy_module
from ._unwind import pin_gcc_unwinder
from .errors import EdgesegError
from .structures import ImageShape, InputSpec

__version__ = "0.2.0"

# before anything can load GStreamer: GCC's C++ unwinder must precede GStreamer's libunwind in the
# process's global symbol scope, or OpenVINO / ONNX Runtime abort on their first exception (_unwind.py)
if not pin_gcc_unwinder():  # GStreamer was loaded first (gi imported before edgeseg): say so once, with the fix
    import logging as _logging

    from ._unwind import FIX as _FIX
    from ._unwind import unwinder_hazard as _hazard

    _logging.getLogger("edgeseg").warning("%s. OpenVINO and torch are disabled in this process and ONNX Runtime "
                                          "would abort on its first error; fix: %s", _hazard(), _FIX)

# public name -> "module:attribute", imported on first access
_LAZY = {
    "load": "edgeseg.predictor:load",
    "Predictor": "edgeseg.predictor:Predictor",
    "Bundle": "edgeseg.bundle:Bundle",
    "stream": "edgeseg.stream:stream",
    "Pipeline": "edgeseg.stream:Pipeline",
}

__all__ = ["EdgesegError", "ImageShape", "InputSpec", "__version__", *_LAZY]


__getattr__, __dir__ = lazy_module(__name__, _LAZY)


if TYPE_CHECKING:  # pragma: no cover
    from .bundle import Bundle
    from .predictor import Predictor, load
    from .stream import Pipeline, stream
