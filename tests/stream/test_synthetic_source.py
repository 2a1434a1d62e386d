"""``synthetic://``: generated frames with exact ground truth, equal to SceneGenerator.render(t)."""
from __future__ import annotations

import time

import numpy as np
import pytest

from edgeseg.data.synthetic import CLASSES, SceneGenerator, split_stream
from edgeseg.errors import InputError
from edgeseg.stream import SOURCES, open_source
from edgeseg.stream.sources.synthetic import SyntheticSource, synthetic_uri
from edgeseg.structures import ImageShape

URI = "synthetic://?seed=3&size=96x72&fps=20&frames=6"


def test_frames_and_truth_equal_the_generator():
    src = open_source(URI, backend="gstreamer")  # the scheme picks the source whatever the backend
    assert isinstance(src, SyntheticSource)
    assert src.size == ImageShape(72, 96) and src.fps == 20.0 and src.expected_frames == 6 and not src.live
    ref = SceneGenerator(ImageShape(72, 96), (3, split_stream("demo")))  # an independent generator
    frames = list(src)
    assert [f.index for f in frames] == list(range(6))
    assert [f.pts_ns for f in frames] == [t * 50_000_000 for t in range(6)]  # t / 20 fps
    assert {f.source_id for f in frames} == {URI}
    for t, f in enumerate(frames):
        truth = ref.render(t)
        np.testing.assert_array_equal(f.image, truth.image)
        np.testing.assert_array_equal(f.meta["labels"], truth.labels)
        assert f.meta["classes"] == CLASSES and f.meta["t"] == t and f.meta["labels"].dtype == np.uint8
    # deterministic: a second pass (and a second source) gives the same pixels
    again = list(SyntheticSource(URI))
    assert all(np.array_equal(a.image, b.image) for a, b in zip(frames, again))
    # the scene moves: consecutive frames differ, and objects are present (thing classes in the truth)
    assert not np.array_equal(frames[0].image, frames[5].image)
    assert max(int(f.meta["labels"].max()) for f in frames) >= 3


def test_start_full_truth_and_held_out_split():
    src = SyntheticSource("synthetic://?seed=3&size=96x72&start=10&frames=2&truth=full&objects=4&split=val")
    ref = SceneGenerator(ImageShape(72, 96), (3, split_stream("val")), 4)
    frames = list(src)
    assert [f.index for f in frames] == [0, 1] and [f.meta["t"] for f in frames] == [10, 11]
    assert frames[0].pts_ns == 10 * 40_000_000  # default 25 fps
    truth = ref.render(11)
    np.testing.assert_array_equal(frames[1].meta["truth"].instance_ids, truth.instance_ids)
    np.testing.assert_array_equal(frames[1].image, truth.image)
    # the demo split's scenes are not the validation split's scenes
    demo = SyntheticSource("synthetic://?seed=3&size=96x72&frames=1")
    assert not np.array_equal(next(iter(demo)).image, ref.render(0).image)


def test_live_mode_paces_and_drops_oldest_counted():
    src = SyntheticSource("synthetic://?seed=0&size=64x48&fps=200&frames=40&live=1", buffer_size=2)
    got = []
    t0 = time.perf_counter()
    for f in src:
        got.append(f.index)
        time.sleep(0.02)  # a consumer 4x slower than the 200 fps clock
    elapsed = time.perf_counter() - t0
    src.close()
    assert elapsed >= 39 / 200  # frames are produced on the clock, not faster
    assert src.generated == 40 and len(got) + src.dropped == 40 and src.dropped > 0
    assert got == sorted(got) and got[-1] == 39  # order kept; the newest frame survives


def test_realtime_keyword_makes_it_live_and_stop_ends_it():
    src = SyntheticSource("synthetic://?size=32x24&fps=100", realtime=True)  # endless
    assert src.live and src.expected_frames is None
    n = 0
    for _ in src:
        n += 1
        if n == 3:
            src.stop()
    src.close()
    assert 3 <= n <= 3 + 4  # what was buffered before stop still drains, nothing more


@pytest.mark.parametrize("uri, message", [
    ("synthetic://?colour=red", "unknown option"),
    ("synthetic://?size=big", "size='big' is not WxH"),
    ("synthetic://?frames=-2", "frames must be >= 0"),
    ("synthetic://?fps=fast", "fps='fast' is not a number"),
    ("synthetic://?truth=all", "truth='all'"),
])
def test_bad_options_name_the_uri(uri, message):
    with pytest.raises(InputError, match=message) as e:
        SyntheticSource(uri)
    assert uri in str(e.value)


def test_registered_and_uri_helper():
    assert SOURCES.entry("synthetic").meta == {"schemes": ("synthetic",), "standalone": True}
    uri = synthetic_uri(5, ImageShape(240, 320), 30, 7, objects=2)
    assert uri == "synthetic://?seed=5&size=320x240&fps=30&frames=7&objects=2"
    src = open_source(uri, name="cam-x")
    assert (src.seed, src.size, src.fps, src.frames, src.generator.max_objects) == (5, ImageShape(240, 320), 30.0, 7, 2)
    assert next(iter(src)).source_id == "cam-x"
