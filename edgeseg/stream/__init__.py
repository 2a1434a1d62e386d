"""Streaming: sources (GStreamer, OpenCV), overlapped stages, sinks, overlays, metrics.

::

    for frame, result in edgeseg.stream("rtsp://cam/1", "road.edgeseg", sink="out.mp4"):
        ...
    stats = Pipeline([GstSource("file:///clip.mp4"), *predictor_stages(predictor), Mp4Sink("out.mp4")]).run()

Importing this package does not import GStreamer (``gi``); sources and sinks load it when opened.
See docs/streaming.md.
"""
from .api import Stream, StreamOptions, build_pipeline, load_recipe, stream
from .base import SINKS, SOURCES, STAGES, FrameBuffer, Packet, Sink, Source, Stage
from .metrics import Latency, Stats
from .overlay import Renderer
from .pipeline import Pipeline
from .sinks import CallbackSink, DisplaySink, JsonLinesSink, LabelPngSink, Mp4Sink, RtspServerSink
from .sources import GstSource, MultiSource, OpenCVSource, open_source, parse_source
from .stages import DecodeStage, InferenceStage, PreprocessStage, RenderStage, predictor_stages

__all__ = [
    "stream", "Stream", "Pipeline", "StreamOptions", "build_pipeline", "load_recipe", "Stats", "Latency",
    "Source", "Stage", "Sink", "Packet", "FrameBuffer", "SOURCES", "SINKS", "STAGES",
    "GstSource", "MultiSource", "OpenCVSource", "open_source", "parse_source",
    "PreprocessStage", "InferenceStage", "DecodeStage", "RenderStage", "predictor_stages", "Renderer",
    "Mp4Sink", "DisplaySink", "RtspServerSink", "JsonLinesSink", "LabelPngSink", "CallbackSink",
]


class _CallableModule(type(__import__("sys"))):
    """``edgeseg.stream`` is both this package and the :func:`stream` function: once the package is
    imported, Python binds the attribute ``edgeseg.stream`` to the module, so the module itself
    must be callable for ``edgeseg.stream(source, bundle)`` to keep working."""

    def __call__(self, *args, **kwargs):
        return stream(*args, **kwargs)


__import__("sys").modules[__name__].__class__ = _CallableModule
