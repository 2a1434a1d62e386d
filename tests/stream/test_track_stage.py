"""``TrackStage`` in a stream: one tracker per source, reset on a discontinuity, and ``edgeseg run --track``
with the shipped SOLOv2 bundle writing JSON lines whose track ids stay with the generator's true objects."""
from __future__ import annotations

import dataclasses
import json
from typing import Iterator

import numpy as np
import pytest

from edgeseg.cli import main
from edgeseg.errors import InputError
from edgeseg.structures import Frame, ImageShape
from edgeseg.stream import CallbackSink, MultiSource, Pipeline, Source, Stage, StreamOptions, build_pipeline
from edgeseg.stream.base import DISCONTINUITY
from edgeseg.stream.sources.synthetic import SyntheticSource
from edgeseg.stream.track_stage import TrackStage

URI = "synthetic://?seed={seed}&size=160x90&frames={n}&objects=4&truth=full"


class TruthStage(Stage):
    """Stands in for a model: the frame's true instances, without their ids."""

    name = "truth"

    def process(self, packet):
        packet.result = dataclasses.replace(packet.frame.meta["truth"].instances, track_ids=None)
        return packet


class JumpSource(Source):
    """A synthetic stream whose frame ``jump`` comes from another scene, flagged as a discontinuity."""

    def __init__(self, n: int, jump: int):
        super().__init__()
        self.uri = "jump"
        self.a, self.b = SyntheticSource(URI.format(seed=1, n=n)), SyntheticSource(URI.format(seed=2, n=n))
        self.n, self.jump = n, jump

    def __iter__(self) -> Iterator[Frame]:
        for t in range(self.n):
            f = (self.a if t < self.jump else self.b).frame(t)
            f = Frame(f.image, f.pts_ns, t, self.uri, f.meta)
            if t == self.jump:
                f.meta[DISCONTINUITY] = True
            yield f


def _run(source: Source) -> tuple[list[tuple[Frame, object]], TrackStage, set[str]]:
    out: list = []
    stage, sources = TrackStage(), set()

    def collect(frame, result):
        out.append((frame, result))
        sources.update(stage.trackers)  # (the stage forgets its trackers when the pipeline closes it)

    Pipeline([source, TruthStage(), stage, CallbackSink(collect)], log_interval_s=0, handle_signals=False).run()
    return out, stage, sources


def _true_to_track(frames) -> dict[int, set[int]]:
    pairs: dict[int, set[int]] = {}
    for f, r in frames:
        for true, tid in zip(f.meta["truth"].instances.track_ids.tolist(), r.track_ids.tolist()):
            pairs.setdefault(true, set()).add(tid)
    return pairs


def test_one_tracker_per_source():
    """Two sources of different scenes, interleaved: each keeps its own ids from 1, one per true object."""
    src = MultiSource([SyntheticSource(URI.format(seed=1, n=12), name="a"), SyntheticSource(URI.format(seed=2, n=12), name="b")])
    out, stage, sources = _run(src)
    assert sources == {"a", "b"} and len(out) == 24 and stage.trackers == {}
    for sid in ("a", "b"):
        frames = [(f, r) for f, r in out if f.source_id == sid]
        pairs = _true_to_track(frames)
        assert all(len(v) == 1 for v in pairs.values())  # one id per true object, for the whole run
        ids = sorted(next(iter(v)) for v in pairs.values())
        assert ids == list(range(1, len(ids) + 1))  # each source counts from 1: no shared tracker
        assert len(frames[0][1]) == len(frames[0][0].meta["truth"].instances) > 0
    assert stage.resets == {}  # the first frame of each source is a discontinuity with nothing to forget


def test_a_discontinuity_forgets_that_sources_tracks():
    out, stage, _ = _run(JumpSource(10, jump=6))
    before, after = _true_to_track(out[:6]), _true_to_track(out[6:])
    assert all(len(v) == 1 for v in before.values()) and all(len(v) == 1 for v in after.values())
    last_before = max(next(iter(v)) for v in before.values())
    assert sorted(next(iter(v)) for v in after.values()) == list(range(last_before + 1, last_before + 1 + len(after)))
    assert stage.resets == {"jump": 1}


class PanopticTruthStage(Stage):
    """Stands in for a panoptic model that numbers its segments 1..K on each frame, things first."""

    name = "truth"

    def process(self, packet):
        pan = packet.frame.meta["truth"].panoptic
        order = sorted(pan.segments, key=lambda s: (not s.isthing, -s.area))
        lut = np.zeros(int(pan.segment_ids.max()) + 1, np.int32)
        for k, seg in enumerate(order, 1):
            lut[seg.id] = k
        packet.result = dataclasses.replace(pan, segment_ids=lut[pan.segment_ids],
                                            segments=tuple(dataclasses.replace(seg, id=int(lut[seg.id])) for seg in order))
        return packet


def test_panoptic_results_keep_thing_ids_through_the_stage():
    out: list = []
    Pipeline([SyntheticSource(URI.format(seed=3, n=12)), PanopticTruthStage(), TrackStage(),
              CallbackSink(lambda f, r: out.append((f, r)))], log_interval_s=0, handle_signals=False).run()
    ids: dict[int, set[int]] = {}
    for f, r in out:
        truth = f.meta["truth"].panoptic
        for seg in truth.segments:
            got = set(np.unique(r.segment_ids[truth.segment_ids == seg.id]).tolist())
            assert len(got) == 1  # the same pixels, one segment
            if seg.isthing:
                ids.setdefault(seg.id, set()).update(got)
            else:
                assert got == {seg.category_id + 1}
    assert len(ids) == 4 and all(len(v) == 1 for v in ids.values())  # four objects, one id each
    assert sorted(next(iter(v)) for v in ids.values()) == list(range(1001, 1001 + len(ids)))


def test_the_stage_refuses_results_without_objects():
    from edgeseg.stream.base import Packet
    from edgeseg.structures import SemanticResult

    p = Packet(Frame(np.zeros((4, 4, 3), np.uint8)))
    p.result = SemanticResult(np.zeros((4, 4), np.uint8))
    with pytest.raises(InputError, match="track stage got a SemanticResult"):
        TrackStage().process(p)
    with pytest.raises(InputError, match="max_age"):
        TrackStage(max_age=-1)


def test_edgeseg_run_track_json_ids_stay_with_the_true_objects(tmp_path):
    """``edgeseg run --bundle shapes-instance --track``: each detection matched to a true object (mask IoU
    >= 0.5) keeps one track id over the frames for that object and class (the model may also call an
    object by a second class: that detection has an id of its own, never the first one's)."""
    from edgeseg.structures import rle_decode

    n, uri = 6, "synthetic://?seed=0&size=192x144&frames=6"
    jl = tmp_path / "ids.jsonl"
    assert main(["run", "--bundle", "shapes-instance", "--source", uri, "--track", "--json-out", str(jl),
                 "--backend", "onnxruntime", "--precision", "fp32", "--threads", "1"]) == 0
    lines = [json.loads(x) for x in jl.read_text().splitlines()]
    assert [d["index"] for d in lines] == list(range(n))
    gen = SyntheticSource(uri).generator
    ids: dict[tuple[int, str], set[int]] = {}
    frames_seen: dict[tuple[int, str], int] = {}
    for d in lines:
        truth = gen.render(d["index"]).instances
        for s in d["segments"]:
            m = rle_decode(s["rle"])
            iou = [(m & t).sum() / (m | t).sum() for t in truth.masks]
            k = int(np.argmax(iou))
            if iou[k] >= 0.5:
                key = (int(truth.track_ids[k]), s["class"])
                ids.setdefault(key, set()).add(s["track_id"])
                frames_seen[key] = frames_seen.get(key, 0) + 1
    assert all(len(v) == 1 for v in ids.values()), ids
    assert len({next(iter(v)) for v in ids.values()}) == len(ids)  # no two objects share an id
    assert len(ids) == 9  # true objects 1..5 matched, four of them also under a second class
    steady = {k: ids[k] for k, c in frames_seen.items() if c == n}  # matched on every frame
    assert steady == {(4, "rectangle"): {2}, (2, "triangle"): {3}}  # ids handed out on frame 0, kept to the end


def test_track_needs_an_instance_or_panoptic_bundle(tmp_path, capsys):
    assert main(["run", "--bundle", "shapes", "--source", "synthetic://?size=160x120&frames=2", "--track",
                 "--backend", "onnxruntime", "--precision", "fp32"]) == 2
    assert "'shapes' is a semantic bundle" in capsys.readouterr().err
    assert main(["run", "--prompt", str(tmp_path / "m.png"), "--source", "synthetic://?frames=2", "--track"]) == 2
    assert "--track" in capsys.readouterr().err
    with pytest.raises(InputError, match="does not apply to a prompt"):
        build_pipeline(StreamOptions(source="synthetic://?frames=2", prompt=np.ones((4, 4), np.uint8), track=True))
