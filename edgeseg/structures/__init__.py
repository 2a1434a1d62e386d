"""Plain data types shared by every part of edgeseg (numpy only)."""
from .decoder_options import DECODER_OPTIONS, DecoderOptions, InstanceOptions, PanopticOptions, SemanticOptions, decoder_options
from .frame import Frame
from .input_spec import InputSpec, PreprocessMeta, pad_levels
from .palette import CAMVID_CLASSES, CAMVID_PALETTE, colorize, default_palette
from .results import InstanceResult, PanopticResult, PromptedResult, Segment, SemanticResult, TrackResult
from .rle import rle_area, rle_decode, rle_encode
from .shapes import ImageShape

__all__ = [
    "Frame", "ImageShape", "InputSpec", "PreprocessMeta", "SemanticResult", "InstanceResult",
    "PanopticResult", "Segment", "TrackResult", "PromptedResult", "rle_encode", "rle_decode", "rle_area",
    "DECODER_OPTIONS", "DecoderOptions", "SemanticOptions", "InstanceOptions", "PanopticOptions", "decoder_options",
    "CAMVID_CLASSES", "CAMVID_PALETTE", "default_palette", "colorize",
]
