"""The tests' reference video decode: every frame of a file read by a plain OpenCV (FFmpeg) loop, RGB.
What edgeseg's readers (edgeseg.data.video, calibration sampling, stream sources and sinks) are
compared against, pixel for pixel."""
from __future__ import annotations

from pathlib import Path

import numpy as np


def decode_video_rgb(path: str | Path) -> list[np.ndarray]:
    import cv2

    cap = cv2.VideoCapture(str(path))
    frames = []
    while True:
        ok, bgr = cap.read()
        if not ok:
            break
        frames.append(np.ascontiguousarray(bgr[..., ::-1]))
    cap.release()
    return frames
