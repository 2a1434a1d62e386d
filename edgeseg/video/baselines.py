"""The two reference baselines of issue 13, with :class:`~edgeseg.video.Propagator`'s interface.

* :class:`CopyFirstMask`: every frame gets the prompt (J&F 36.7 on the three DAVIS-2016 sequences
  in ``../shared/data``).
* :class:`FlowWarp`: each object's soft mask is warped onto the next frame with full-resolution DIS
  (preset medium) backward flow, bilinear sampling, and kept soft; the mask is ``p > 0.5`` (53.5).
"""
from __future__ import annotations

from abc import ABC, abstractmethod
from typing import Any

import numpy as np

from ..errors import InputError
from ..structures import ImageShape, TrackResult
from .flow import dis_preset, to_flow_scale
from .prompt import frame_image, prompt_ids
from .propagate import StepInfo


class _Baseline(ABC):
    def __init__(self) -> None:
        self.reset()

    def reset(self) -> None:
        self._shape: ImageShape | None = None
        self._ids: list[int] = []
        self._soft: dict[int, np.ndarray] = {}
        self._index = -1
        self.last_info: StepInfo | None = None

    def start(self, frame: Any, prompt: Any) -> TrackResult:
        self.reset()
        rgb = frame_image(frame)
        self._shape = ImageShape.of(rgb)
        self._index = 0
        self._set(rgb, prompt_ids(prompt, self._shape))
        self.last_info = StepInfo(0)
        return self.result()

    def add_prompt(self, frame: Any, prompt: Any) -> TrackResult:
        if self._shape is None:
            return self.start(frame, prompt)
        ids = prompt_ids(prompt, self._shape)
        self.step(frame)
        for k in self._soft:
            self._soft[k] = np.where(ids == 0, self._soft[k], 0.0).astype(np.float32)
        self._set(frame_image(frame), ids)
        return self.result()

    def step(self, frame: Any) -> TrackResult:
        if self._shape is None:
            raise InputError(f"{type(self).__name__}.step() before start()")
        rgb = frame_image(frame)
        if ImageShape.of(rgb) != self._shape:
            raise InputError(f"frame is {rgb.shape[1]}x{rgb.shape[0]}, the video started at "
                             f"{self._shape.width}x{self._shape.height}", fix="call reset() and start() for a new source")
        self._index += 1
        self._advance(rgb)
        self.last_info = StepInfo(self._index)
        return self.result()

    def _set(self, rgb: np.ndarray, ids: np.ndarray) -> None:
        for k in np.unique(ids):
            if k:
                self._soft[int(k)] = (ids == k).astype(np.float32)
        self._ids = sorted(self._soft)

    @abstractmethod
    def _advance(self, rgb: np.ndarray) -> None:
        """Update the soft masks ``self._soft`` for the new frame ``rgb``."""

    def result(self) -> TrackResult:
        h, w = self._shape.height, self._shape.width
        if not self._ids:
            return TrackResult(np.zeros((0, h, w), bool), np.zeros(0, np.int64), np.zeros(0, np.float32))
        soft = np.stack([self._soft[k] for k in self._ids])
        best = soft.argmax(0)
        masks = np.stack([(best == i) & (soft[i] > 0.5) for i in range(len(self._ids))])
        return TrackResult(masks, np.asarray(self._ids, np.int64), np.ones(len(self._ids), np.float32))


class CopyFirstMask(_Baseline):
    """Every frame gets the last prompt's masks."""

    def _advance(self, rgb: np.ndarray) -> None:
        """The masks stay as prompted: nothing to update."""


class FlowWarp(_Baseline):
    """Soft masks carried by dense DIS backward flow (``preset``, at ``scale`` of the frame size)."""

    def __init__(self, preset: str = "medium", scale: float = 1.0):
        self.preset, self.scale = preset, scale
        self._dis = None
        super().__init__()

    def reset(self) -> None:
        super().reset()
        self._prev: np.ndarray | None = None
        self._grid: tuple[np.ndarray, np.ndarray] | None = None

    def _set(self, rgb: np.ndarray, ids: np.ndarray) -> None:
        import cv2

        super()._set(rgb, ids)
        self._prev = self._small(cv2.cvtColor(rgb, cv2.COLOR_RGB2GRAY))

    def _small(self, gray: np.ndarray) -> np.ndarray:
        return to_flow_scale(gray, self.scale)

    def _advance(self, rgb: np.ndarray) -> None:
        import cv2

        if self._dis is None:
            self._dis = cv2.DISOpticalFlow_create(dis_preset(self.preset))
        h, w = self._shape.height, self._shape.width
        if self._grid is None:
            ys, xs = np.mgrid[0:h, 0:w].astype(np.float32)
            self._grid = (xs, ys)
        cur = self._small(cv2.cvtColor(rgb, cv2.COLOR_RGB2GRAY))
        flow = self._dis.calc(cur, self._prev, None)
        if flow.shape[:2] != (h, w):
            sx, sy = w / flow.shape[1], h / flow.shape[0]
            flow = cv2.resize(flow, (w, h)) * np.array([sx, sy], np.float32)
        mx, my = self._grid[0] + flow[..., 0], self._grid[1] + flow[..., 1]
        for k in self._ids:
            self._soft[k] = cv2.remap(self._soft[k], mx, my, cv2.INTER_LINEAR, borderMode=cv2.BORDER_CONSTANT)
        self._prev = cur
