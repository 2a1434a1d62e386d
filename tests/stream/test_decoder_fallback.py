"""A hardware decoder that starts but fails later (a container without NVDEC, a VA driver refusing a
profile) is replaced by the software decoder and the file resumes after the last frame delivered.

No hardware decoder exists here: the real ``vp8dec`` stands in for one (listed in ``HARDWARE_DECODERS``, so
its rank is raised and it is watched) and a pad probe makes it fail as a hardware decoder does, posting an
error from the element and giving no more frames; ``avdec_vp8`` is the software decoder decodebin falls back
to. The fallback, the resume and the blame are edgeseg's, run through real GStreamer pipelines."""
from __future__ import annotations

import logging

import numpy as np
import pytest

from edgeseg.errors import StreamError
from edgeseg.stream import GstSource
from edgeseg.stream import gst as gst_mod
from edgeseg.stream.sources import gst_source
from deadline import within

FRAMES = 30


@pytest.fixture
def vp8_clip(gst, tmp_path):
    """30 frames of a moving ball, VP8 in WebM (two VP8 decoders here: vp8dec and avdec_vp8)."""
    path = tmp_path / "ball.webm"
    pipe = gst.parse_launch(f"videotestsrc num-buffers={FRAMES} pattern=ball ! "
                            "video/x-raw,width=64,height=48,framerate=30/1 ! vp8enc deadline=1 ! webmmux ! "
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
    monkeypatch.setattr(gst_mod, "_failed_decoders", set())
    yield
    for name, rank in ranks.items():
        gst.ElementFactory.find(name).set_rank(rank)


def _fail(monkeypatch, gst, *, after: int, blame: str = "decoder", pipelines: int = 1) -> list[str]:
    """The first ``pipelines`` pipelines' vp8dec give ``after`` frames, then an error is posted by the decoder
    (``blame="decoder"``) or by the demuxer before it, and no frame follows. Returns the decoders each
    pipeline made."""
    from gi.repository import GLib

    made: list[str] = []
    original = gst_source.hardware_decoder_watch

    def watch(found):
        inner = original(found)

        def on_element(bin_, parent, element):
            inner(bin_, parent, element)
            factory = element.get_factory()
            name = factory.get_name() if factory is not None else ""
            if "Decoder" not in (factory.get_metadata("klass") if factory is not None else ""):
                return
            made.append(name)
            if name != "vp8dec" or len(made) > pipelines:
                return
            seen = [0]

            def probe(_pad, _info):
                seen[0] += 1
                if seen[0] <= after:
                    return gst.PadProbeReturn.OK
                if seen[0] == after + 1:
                    poster = element if blame == "decoder" else _demuxer(parent)
                    err = GLib.Error.new_literal(gst.StreamError.quark(), "decode failed", gst.StreamError.DECODE)
                    poster.post_message(gst.Message.new_error(poster, err, "stand-in for a hardware failure"))
                return gst.PadProbeReturn.DROP

            element.get_static_pad("src").add_probe(gst.PadProbeType.BUFFER, probe)

        return on_element

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


def _decode(path) -> tuple[list[int], list[np.ndarray], GstSource]:
    with GstSource(str(path)) as src:
        frames = list(src)
    return [f.pts_ns for f in frames], [f.image for f in frames], src


@within(60)
@pytest.mark.parametrize("after", [10, 0])
def test_a_failing_hardware_decoder_is_replaced_and_the_file_resumes(gst, vp8_clip, vp8dec_as_hardware,
                                                                     monkeypatch, caplog, after):
    ref_pts, ref_images, _ = _decode(vp8_clip)  # vp8dec, raised as a hardware decoder, with no failure
    assert len(ref_pts) == FRAMES
    made = _fail(monkeypatch, gst, after=after)
    with caplog.at_level(logging.WARNING, "edgeseg.stream"):
        pts, images, src = _decode(vp8_clip)
    assert made == ["vp8dec", "avdec_vp8"]  # the hardware one first; the software one after it failed
    assert pts == ref_pts  # every frame once, in order: none lost, none repeated
    assert max(int(np.abs(a.astype(int) - b).max()) for a, b in zip(images, ref_images)) <= 2
    assert src.decoder_fallback.startswith(f"vp8dec failed after {after} frames (decode failed")
    assert "hardware decoder vp8dec failed" in caplog.text
    assert gst.ElementFactory.find("vp8dec").get_rank() == gst.Rank.NONE
    assert gst_mod.prefer_hardware_decoders() == []  # not raised again in this process


@within(60)
def test_an_error_before_the_first_frame_from_another_element_is_blamed_on_the_hardware_decoder(
        gst, vp8_clip, vp8dec_as_hardware, monkeypatch):
    """A hardware decoder refusing the stream often shows as the demuxer's not-negotiated error."""
    made = _fail(monkeypatch, gst, after=0, blame="demuxer")
    pts, _, src = _decode(vp8_clip)
    assert made == ["vp8dec", "avdec_vp8"] and len(pts) == FRAMES
    assert "from element matroskademux" in src.decoder_fallback


@within(60)
def test_a_file_error_after_frames_is_not_blamed_on_the_decoder(gst, vp8_clip, vp8dec_as_hardware, monkeypatch):
    """The demuxer failing mid-file (a corrupt file) ends the source as before, the frames before it kept:
    the hardware decoder is not disabled for it and the file is not decoded twice."""
    made = _fail(monkeypatch, gst, after=10, blame="demuxer")
    got = []
    with pytest.raises(StreamError, match="failed after 10 frames: decode failed"):
        with GstSource(str(vp8_clip)) as src:
            for f in src:
                got.append(f.index)
    assert got == list(range(10)) and made == ["vp8dec"]
    assert src.decoder_fallback is None
    assert gst.ElementFactory.find("vp8dec").get_rank() > gst.Rank.PRIMARY


def test_a_decoder_is_disabled_once():
    pytest.importorskip("gi")
    ok, why = gst_mod.available()
    if not ok:
        pytest.skip(why)
    saved = set(gst_mod._failed_decoders)
    try:
        gst_mod._failed_decoders.clear()
        assert gst_mod.disable_decoders(["nosuchdecoder", "nosuchdecoder"]) == ["nosuchdecoder"]
        assert gst_mod.disable_decoders(["nosuchdecoder"]) == []  # a second failure ends the source as usual
    finally:
        gst_mod._failed_decoders.clear()
        gst_mod._failed_decoders.update(saved)
