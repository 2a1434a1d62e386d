"""Sinks: the only part of a pipeline that touches disk, network or display."""
from .files import CallbackSink, JsonLinesSink, LabelPngSink, frame_record, label_image
from .rtsp import RtspServerSink
from .video import ENCODERS, DisplaySink, Mp4Sink, has_screen

__all__ = ["Mp4Sink", "DisplaySink", "RtspServerSink", "JsonLinesSink", "LabelPngSink", "CallbackSink",
           "ENCODERS", "frame_record", "label_image", "has_screen"]
