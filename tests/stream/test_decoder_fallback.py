"""A hardware decoder that starts but fails later (a container without NVDEC, a VA driver refusing a
profile) is replaced by the software decoder and the file resumes after the last frame delivered.

No hardware decoder exists here: the real ``vp8dec`` stands in for one (listed in ``HARDWARE_DECODERS``, so
its rank is raised and it is watched) and a pad probe makes it fail as a hardware decoder does, posting an
error from the element and giving no more frames; ``avdec_vp8`` is the software decoder decodebin falls back
to. The fallback, the resume and the blame are edgeseg's, run through real GStreamer pipelines."""
from __future__ import annotations

import logging
import threading

import numpy as np
import pytest

from edgeseg.errors import StreamError
from edgeseg.stream import GstSource
from edgeseg.stream import gst as gst_mod
from edgeseg.stream.sources import gst_source
from edgeseg.stream.sources.gst_source import blamed_decoders
from deadline import within

FRAMES = 30


@pytest.fixture
def vp8_clip(gst, tmp_path):
    """30 frames of a moving ball, VP8 in WebM (two VP8 decoders here: vp8dec and avdec_vp8), a keyframe every
    5 frames, each starting a cluster the index points to (as an MP4's sync-sample table would)."""
    path = tmp_path / "ball.webm"
    pipe = gst.parse_launch(f"videotestsrc num-buffers={FRAMES} pattern=ball ! "
                            "video/x-raw,width=64,height=48,framerate=30/1 ! vp8enc deadline=1 keyframe-max-dist=5 ! "
                            "webmmux min-cluster-duration=0 ! "
                            f"filesink location={path}")
    pipe.set_state(gst.State.PLAYING)
    msg = pipe.get_bus().timed_pop_filtered(20 * gst.SECOND, gst.MessageType.EOS | gst.MessageType.ERROR)
    pipe.set_state(gst.State.NULL)
    assert msg is not None and msg.type == gst.MessageType.EOS
    return path


@pytest.fixture
def vp8dec_as_hardware(gst, monkeypatch):
    """vp8dec listed as this machine's hardware decoder; ranks and the failed set restored afterwards."""
    ranks = {n: gst.ElementFactory.find(n).get_rank() for n in ("vp8dec", "avdec_vp8")}
    monkeypatch.setattr(gst_mod, "HARDWARE_DECODERS", (("vp8dec", False),))
    monkeypatch.setattr(gst_mod, "_failed_decoders", {})
    yield
    for name, rank in ranks.items():
        gst.ElementFactory.find(name).set_rank(rank)


def _fail(monkeypatch, gst, *, after: int, blame: str = "decoder", pipelines: int = 1,
          software_too: bool = False) -> dict[str, list]:
    """The first ``pipelines`` vp8dec decoders give ``after`` frames, then an error is posted and no frame
    follows: by the decoder (``blame="decoder"``: a V4L2-style decoder that cannot get its memory), by the
    demuxer as GStreamer words a stream the decoder refused (``"refused"``: nvcodec and VA return
    NOT_NEGOTIATED and post nothing; the demuxer posts "Internal data stream error ... not-negotiated") or a
    plain demuxer error (``"demuxer"``: a corrupt file); ``"silent"``: nothing is posted (a hung decoder).
    ``software_too``: avdec_vp8 fails at once as well.
    Returns the decoders each pipeline made and the buffers each was given after its last flush."""
    from gi.repository import GLib

    made: dict[str, list] = {"decoders": [], "buffers": []}
    original = gst_source.hardware_decoder_watch

    def watch(decoders):
        added, removed = original(decoders)

        def on_element(bin_, parent, element):
            added(bin_, parent, element)
            factory = element.get_factory()
            if factory is None or "Decoder" not in factory.get_metadata("klass"):
                return
            name = factory.get_name()
            made["decoders"].append(name)
            made["buffers"].append(0)
            slot = len(made["buffers"]) - 1

            def count(_pad, info):  # the coded frames it was given since the last flush (a seek flushes)
                if info.type & gst.PadProbeType.BUFFER:
                    made["buffers"][slot] += 1
                elif info.get_event().type == gst.EventType.FLUSH_STOP:
                    made["buffers"][slot] = 0
                return gst.PadProbeReturn.OK

            element.get_static_pad("sink").add_probe(gst.PadProbeType.BUFFER | gst.PadProbeType.EVENT_FLUSH, count)
            hardware_fails = name == "vp8dec" and made["decoders"].count("vp8dec") <= pipelines
            if not (hardware_fails or (software_too and name == "avdec_vp8")):
                return
            limit = after if name == "vp8dec" else 0
            seen = [0]

            hang = blame == "silent" and name == "vp8dec"

            def probe(_pad, _info):
                seen[0] += 1
                if seen[0] <= limit:
                    return gst.PadProbeReturn.PASS if hang else gst.PadProbeReturn.OK
                if hang:
                    return gst.PadProbeReturn.OK  # a blocking probe: the pad stays blocked until the pipeline stops
                if seen[0] == limit + 1:
                    kind = blame if name == "vp8dec" else "decoder"
                    poster = element if kind == "decoder" else _demuxer(parent)
                    if kind == "refused":
                        err = GLib.Error.new_literal(gst.StreamError.quark(), "Internal data stream error.",
                                                     gst.StreamError.FAILED)
                        debug = "streaming stopped, reason not-negotiated (-4)"
                    else:
                        err = GLib.Error.new_literal(gst.StreamError.quark(), "decode failed", gst.StreamError.DECODE)
                        debug = "stand-in for a failure"
                    poster.post_message(gst.Message.new_error(poster, err, debug))
                return gst.PadProbeReturn.DROP

            flags = gst.PadProbeType.BUFFER | gst.PadProbeType.BLOCK if hang else gst.PadProbeType.BUFFER
            element.get_static_pad("src").add_probe(flags, probe)

        return on_element, removed

    monkeypatch.setattr(gst_source, "hardware_decoder_watch", watch)
    return made


def _demuxer(decodebin):
    it = decodebin.iterate_elements()
    while True:
        ok, e = it.next()
        if e is None:
            raise AssertionError(f"no demuxer in {decodebin.get_name()} ({ok})")
        if "Demux" in e.get_factory().get_metadata("klass"):
            return e


def _decode(path, **kw) -> tuple[list[int], list[np.ndarray], GstSource]:
    with GstSource(str(path), **kw) as src:
        frames = list(src)
    assert [f.index for f in frames] == list(range(len(frames)))
    return [f.pts_ns for f in frames], [f.image for f in frames], src


def _same_frames(got, ref) -> None:
    (pts, images), (ref_pts, ref_images) = got, ref
    assert pts == ref_pts  # every frame once, in order: none lost, none repeated
    assert max(int(np.abs(a.astype(int) - b).max()) for a, b in zip(images, ref_images)) <= 2


@within(60)
@pytest.mark.parametrize("after,blame,realtime", [(10, "decoder", False), (0, "decoder", False),
                                                  (10, "refused", False), (1, "refused", False),
                                                  (12, "decoder", True),
                                                  (0, "decoder", True)])  # a real-time restart is not left paused
def test_a_failing_hardware_decoder_is_replaced_and_the_file_resumes(gst, vp8_clip, vp8dec_as_hardware,
                                                                     monkeypatch, caplog, after, blame, realtime):
    ref_pts, ref_images, _ = _decode(vp8_clip)  # vp8dec, raised as a hardware decoder, with no failure
    assert len(ref_pts) == FRAMES
    made = _fail(monkeypatch, gst, after=after, blame=blame)
    with caplog.at_level(logging.WARNING, "edgeseg.stream"):
        pts, images, src = _decode(vp8_clip, realtime=realtime)
    assert made["decoders"] == ["vp8dec", "avdec_vp8"]  # the hardware one first; the software one after it failed
    _same_frames((pts, images), (ref_pts, ref_images))
    assert src.decoder_fallback.startswith(f"vp8dec failed after {after} frames (")
    assert "hardware decoder vp8dec failed" in caplog.text
    assert gst.ElementFactory.find("vp8dec").get_rank() == gst.Rank.NONE
    assert gst_mod.prefer_hardware_decoders() == []  # not raised again in this process
    if after:  # the software decoder started at the keyframe before the last frame delivered (one every 5)
        assert made["buffers"][1] <= FRAMES - after + 5


@within(60)
@pytest.mark.parametrize("after", [10, 0])
def test_a_hardware_decoder_that_hangs_is_replaced(gst, vp8_clip, vp8dec_as_hardware, monkeypatch, after):
    """No frame, no error, no end: the reader would wait for ever. Before its first frame too: a review of the
    start-up watchdog (START_STALL_S), which with the same wait restarted the hung decoder itself, then failed the
    run ('did not start ... twice') blaming no decoder."""
    ref_pts, ref_images, _ = _decode(vp8_clip)
    monkeypatch.setattr(gst_source, "HARDWARE_STALL_S", 3.0)
    monkeypatch.setattr(gst_source, "START_STALL_S", 3.0)
    made = _fail(monkeypatch, gst, after=after, blame="silent")
    pts, images, src = _decode(vp8_clip)
    _same_frames((pts, images), (ref_pts, ref_images))
    assert made["decoders"] == ["vp8dec", "avdec_vp8"]
    assert src.decoder_fallback.startswith(f"vp8dec failed after {after} frames (no frame and no error from the "
                                           "decoder for 3 s")


@within(60)
@pytest.mark.parametrize("after", [1, 10])
def test_a_file_error_is_not_blamed_on_the_hardware_decoder(gst, vp8_clip, vp8dec_as_hardware, monkeypatch, after):
    """The demuxer failing (a corrupt or truncated file) ends the source as before, the frames before it kept:
    the hardware decoder is not disabled for it and the file is not decoded twice."""
    made = _fail(monkeypatch, gst, after=after, blame="demuxer")
    got = []
    with pytest.raises(StreamError, match=f"failed after {after} frames: decode failed"):
        with GstSource(str(vp8_clip)) as src:
            for f in src:
                got.append(f.index)
    assert got == list(range(after)) and made["decoders"] == ["vp8dec"]
    assert src.decoder_fallback is None
    assert gst.ElementFactory.find("vp8dec").get_rank() > gst.Rank.PRIMARY


@within(60)
def test_the_next_hardware_decoder_gets_its_own_wait_after_one_hung(gst, vp8_clip, vp8dec_as_hardware, monkeypatch):
    """Two hardware decoders (VA's two, or NVDEC's two on a desktop with DeepStream): the first hangs; the
    second, slower to its first frame after the seek, is not blamed for the first one's wait, and the one
    that hung stays disabled."""
    ref_pts, ref_images, _ = _decode(vp8_clip)
    monkeypatch.setattr(gst_mod, "HARDWARE_DECODERS", (("vp8dec", False), ("avdec_vp8", False)))
    monkeypatch.setattr(gst_source, "HARDWARE_STALL_S", 3.0)
    made = _fail(monkeypatch, gst, after=10, blame="silent")
    original = gst_source.hardware_decoder_watch

    def slow_second(decoders):
        added, removed = original(decoders)

        def on_element(bin_, parent, element):
            added(bin_, parent, element)
            if element.get_factory() is not None and element.get_factory().get_name() == "avdec_vp8":
                def slow(_pad, _info):
                    threading.Event().wait(0.1)
                    return gst.PadProbeReturn.OK

                element.get_static_pad("sink").add_probe(gst.PadProbeType.BUFFER, slow)

        return on_element, removed

    monkeypatch.setattr(gst_source, "hardware_decoder_watch", slow_second)
    pts, images, src = _decode(vp8_clip)
    _same_frames((pts, images), (ref_pts, ref_images))
    assert made["decoders"] == ["vp8dec", "avdec_vp8"]
    assert gst_mod.failed_decoders() == frozenset({"vp8dec"})


@within(60)
def test_a_launch_string_is_not_restarted_once_it_gave_frames(gst, vp8_clip, vp8dec_as_hardware, monkeypatch):
    """A launch string cannot be resumed: decoding it again would deliver its first frames twice."""
    made = _fail(monkeypatch, gst, after=10)
    got = []
    with pytest.raises(StreamError, match="failed after 10 frames: decode failed"):
        with GstSource(f"filesrc location={vp8_clip} ! decodebin ! videoconvert") as src:
            for f in src:
                got.append(f.index)
    assert got == list(range(10)) and made["decoders"] == ["vp8dec"]


@within(60)
def test_a_decoder_whose_software_replacement_fails_too_is_ranked_as_before(gst, vp8_clip, vp8dec_as_hardware,
                                                                           monkeypatch):
    made = _fail(monkeypatch, gst, after=10, software_too=True)
    with pytest.raises(StreamError, match="failed after 10 frames: decode failed"):
        _decode(vp8_clip)
    assert made["decoders"] == ["vp8dec", "avdec_vp8"]
    assert gst.ElementFactory.find("vp8dec").get_rank() > gst.Rank.PRIMARY  # it was not to blame
    assert gst_mod.failed_decoders() == frozenset()


@within(60)
def test_two_sources_on_one_failing_decoder_are_both_restarted(gst, vp8_clip, vp8dec_as_hardware, monkeypatch):
    """Cameras started together pick the same hardware decoder: the second to fail finds it disabled by the
    first and still starts again in software."""
    ref_pts, ref_images, _ = _decode(vp8_clip)
    made = _fail(monkeypatch, gst, after=10, pipelines=2)
    with GstSource(str(vp8_clip)) as b:
        first = GstSource(str(vp8_clip))
        with first:
            _same_frames(_frames(first), (ref_pts, ref_images))
        _same_frames(_frames(b), (ref_pts, ref_images))
    assert made["decoders"].count("vp8dec") == 2 and made["decoders"].count("avdec_vp8") == 2
    assert first.decoder_fallback and b.decoder_fallback


def _frames(src) -> tuple[list[int], list[np.ndarray]]:
    frames = list(src)
    return [f.pts_ns for f in frames], [f.image for f in frames]


def test_blame_follows_the_error_not_the_pipeline():
    decoders = {"nvh264dec0": "nvh264dec"}
    assert blamed_decoders(decoders, "nvh264dec0", "decode failed") == ["nvh264dec"]
    refused = "Internal data stream error. (from element qtdemux0); debug: streaming stopped, reason not-negotiated (-4)"
    assert blamed_decoders(decoders, "qtdemux0", refused) == ["nvh264dec"]
    for src, text in (("souphttpsrc0", "Could not read from resource."), ("qtdemux0", "This file is corrupt"),
                      (None, "no frame for 5.0 s")):
        assert blamed_decoders(decoders, src, text) == []
    assert blamed_decoders({}, "qtdemux0", refused) == []


def test_a_decoder_is_disabled_once_and_restored():
    pytest.importorskip("gi")
    ok, why = gst_mod.available()
    if not ok:
        pytest.skip(why)
    saved = dict(gst_mod._failed_decoders)
    try:
        gst_mod._failed_decoders.clear()
        assert gst_mod.disable_decoders(["nosuchdecoder", "nosuchdecoder"]) == ["nosuchdecoder"]
        assert gst_mod.disable_decoders(["nosuchdecoder"]) == []  # a second source blames it too
        gst_mod.restore_decoders(["nosuchdecoder"])  # one withdraws its blame: still disabled for the other
        assert gst_mod.failed_decoders() == frozenset({"nosuchdecoder"})
        gst_mod.restore_decoders(["nosuchdecoder"])
        assert gst_mod.failed_decoders() == frozenset()
    finally:
        gst_mod._failed_decoders.clear()
        gst_mod._failed_decoders.update(saved)
