"""Memory stays flat on long streams: RSS growth under 5% over 10,000 frames of a test source."""
from __future__ import annotations

from pathlib import Path

import pytest

from edgeseg.stream import CallbackSink, GstSource, JsonLinesSink, Pipeline, predictor_stages

pytestmark = [pytest.mark.gst, pytest.mark.slow]


def rss_kb() -> int:
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1])
    pytest.skip("no /proc/self/status")


def test_rss_flat_over_10000_frames(gst, predictor, tmp_path):
    n = 10_000
    marks = {}

    def watch(frame, result):
        if frame.index == 1000:
            marks["start"] = rss_kb()

    src = GstSource(f"test://ball?frames={n}&width=96&height=72&fps=30")
    stats = Pipeline([src, *predictor_stages(predictor), JsonLinesSink(tmp_path / "r.jsonl"), CallbackSink(watch)],
                     handle_signals=False, log_interval_s=0).run()
    end = rss_kb()
    assert stats.processed == n and stats.errors == 0
    growth = (end - marks["start"]) / marks["start"]
    assert growth < 0.05, f"RSS grew {100 * growth:.1f}% ({marks['start']} -> {end} kB)"
