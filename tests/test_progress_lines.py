"""Progress where no terminal shows a bar (a nohup file, a service's log): plain lines, no carriage returns."""
from __future__ import annotations

import numpy as np

from edgeseg import _progress


def test_long_jobs_write_plain_progress_lines_to_a_log(capsys, monkeypatch):
    """Session 57 (an operator's audit): ``quantize`` under nohup wrote tqdm's carriage returns and cursor codes into
    the log (51 in a 22 s job), and ``vos`` said nothing until its end. Where standard error is not a terminal (here:
    pytest captures it) the bars are :class:`LogProgress` lines; ``enabled=False`` (--no-progress) writes nothing."""
    from edgeseg.quant.calibration import take_frames

    with _progress.bar(10, "edgeseg vos", "frame", every_s=0.0) as b:
        assert isinstance(b, _progress.LogProgress)
        for _ in range(3):
            b.update(1)
    with _progress.bar(None, "stream", "frame", every_s=0.0) as b:  # a count not known
        b.update(2)
    err = capsys.readouterr().err
    assert err.splitlines() == [line for line in err.splitlines() if line]
    assert "\r" not in err and "\x1b" not in err
    assert "edgeseg vos: 3/10 frames" in err and "stream: 2 frames" in err and "left" not in err.splitlines()[-1]
    monkeypatch.setattr(_progress.bar, "__defaults__", ("frame", True, 0.0))  # every_s=0: a line each update
    frames = take_frames((np.zeros((4, 4, 3), np.uint8) for _ in range(6)), 6, progress=True, desc="calib")
    err = capsys.readouterr().err
    assert len(frames) == 6 and "calib: " in err and "\r" not in err and "\x1b" not in err
    assert list(_progress.tracked([1, 2, 3], "sensitivity", "layer", enabled=False)) == [1, 2, 3]
    assert capsys.readouterr().err == ""
