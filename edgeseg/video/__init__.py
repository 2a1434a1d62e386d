"""Video object segmentation: masks given on one frame carried through a video (classical, CPU).

``Propagator`` (explicit per-source state: ``start``, ``step``, ``add_prompt``, ``reset``) and its
``PropagatorConfig``; ``CopyFirstMask`` and ``FlowWarp`` are the two reference baselines with the
same interface. ``Tracker`` keeps identities of instance and panoptic results across frames
(``edgeseg run --track``); ``MotAccumulator`` scores tracks against true ids (CLEAR-MOT, IDF1).
Importing this package imports neither OpenCV nor anything heavy.
"""
from .baselines import CopyFirstMask, FlowWarp
from .prompt import frame_image, prompt_ids
from .propagate import Propagator, PropagatorConfig, StepInfo
from .mot import MotAccumulator, MotCounts
from .tracker import Tracker, TrackStats, to_track_result

__all__ = ["Propagator", "PropagatorConfig", "StepInfo", "CopyFirstMask", "FlowWarp", "prompt_ids", "frame_image",
           "Tracker", "TrackStats", "to_track_result", "MotAccumulator", "MotCounts"]
