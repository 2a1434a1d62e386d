"""Composite VOS sequences (edgeseg.data.composite_vos): exact geometry, exact truth, DAVIS layout."""
import numpy as np
import pytest

cv2 = pytest.importorskip("cv2")

from edgeseg.data.composite_vos import (  # noqa: E402
    Cutout, Motion, composite_sequence, cutouts_from_instances, make_composite_davis, render, write_davis_sequence,
)
from edgeseg.data.davis import Davis  # noqa: E402
from edgeseg.errors import InputError  # noqa: E402


def _still(w, h, speed=0.0):
    return Motion(start=(w / 2, h / 2), velocity=(speed, 0.0), bounds=(0.0, 0.0, float(w), float(h)), scale=1.0,
                  scale_amp=0.0, rot_amp=0.0, elastic_px=0.0, elastic_wave=1.0, swing=0.0, freq=(0.1,) * 4,
                  phase=(0.0,) * 4)


def _block(colour, h=20, w=12):
    alpha = np.zeros((h, w), np.float32)
    alpha[2:-2, 2:-2] = 1.0
    return Cutout(np.full((h, w, 3), colour, np.uint8), alpha, "person", False)


def test_centre_is_a_straight_line_reflected_off_the_bounds():
    m = Motion(start=(10.0, 5.0), velocity=(3.0, -2.0), bounds=(0.0, 0.0, 20.0, 20.0), scale=1.0, scale_amp=0.0,
               rot_amp=0.0, elastic_px=0.0, elastic_wave=1.0, swing=0.0, freq=(0.1,) * 4, phase=(0.0,) * 4)
    assert m.centre(0) == (10.0, 5.0)
    assert m.centre(2) == (16.0, 1.0)
    assert m.centre(5) == pytest.approx((15.0, 5.0))  # x: 25 -> 20 - 5; y: -5 -> 5
    assert m.centre(10) == pytest.approx((0.0, 15.0))  # x: 40 -> 0 after two reflections; y: -15 -> 15


def test_identity_motion_places_the_cutout_pixel_exactly():
    cut = _block((200, 10, 30), h=20, w=12)
    frame = (40, 30)
    (x0, y0), rgb, cover = render(cut, _still(26, 20), 0, frame)  # centre (13, 10): top-left (13 - 6, 10 - 10)
    full_cover = np.zeros((30, 40), np.float32)
    full_cover[y0:y0 + cover.shape[0], x0:x0 + cover.shape[1]] = cover
    expected = np.zeros((30, 40), np.float32)
    expected[0:20, 7:19] = cut.alpha
    np.testing.assert_allclose(full_cover, expected, atol=1e-5)
    inside = cover > 0.5
    np.testing.assert_allclose(rgb[inside], np.float32([200, 10, 30])[None].repeat(inside.sum(), 0), atol=1e-3)


def test_truth_is_the_target_where_it_covers_more_than_half_and_no_distractor_in_front():
    """A pure red target and a pure green distractor on black: the truth is exactly 'red > 127.5',
    the pixels where the green one is in front are not the target's."""
    rng = np.random.default_rng(0)
    target = Cutout(np.full((60, 40, 3), (255, 0, 0), np.uint8), _soft_disc(60, 40), "person", True)
    distractor = Cutout(np.full((50, 50, 3), (0, 255, 0), np.uint8), _soft_disc(50, 50), "car", False)
    bgs = [np.zeros((120, 160, 3), np.uint8)] * 12
    occluded = 0
    for rgb, truth in composite_sequence(bgs, target, distractor, rng, distractor_in_front=True):
        red, green = rgb[..., 0].astype(int), rgb[..., 1].astype(int)
        # red = round(255 * cover_t * (1 - cover_d)); target there iff cover_t > .5 and cover_d <= .5
        assert truth.any()
        assert not (truth & (red < 64)).any()  # red >= 255 * .5 * .5 where the truth holds
        occluded += int(((green > 128) & (red == 0)).sum())
        assert not (truth & (green > 128)).any()
    assert occluded > 0  # the distractor did cross the target's area at some point


def _soft_disc(h, w):
    yy, xx = np.mgrid[0:h, 0:w]
    d = np.hypot((yy - (h - 1) / 2) / (h / 2 - 3), (xx - (w - 1) / 2) / (w / 2 - 3))
    return np.clip((1.0 - d) * 4 + 0.5, 0.0, 1.0).astype(np.float32)


def test_truth_matches_rendered_coverage_exactly_with_no_distractor():
    rng = np.random.default_rng(3)
    target = Cutout(np.full((60, 40, 3), (255, 0, 0), np.uint8), _soft_disc(60, 40), "person", True)
    bgs = [np.zeros((120, 160, 3), np.uint8)] * 6
    for rgb, truth in composite_sequence(bgs, target, None, rng):
        red = rgb[..., 0].astype(np.float32)
        # red = round(255 * cover): 'cover > .5' and 'red >= 128' differ only where cover is within half a level of .5
        assert (truth != (red >= 128)).sum() <= 2


def test_sequence_written_in_davis_layout_reads_back(tmp_path):
    frames = [np.full((24, 32, 3), i * 20, np.uint8) for i in range(4)]
    masks = [np.zeros((24, 32), bool) for _ in range(4)]
    for i, m in enumerate(masks):
        m[5:10, 3 + i:9 + i] = True
    write_davis_sequence(tmp_path, "seq", frames, masks)
    seq = Davis(tmp_path)["seq"]
    assert len(seq) == 4 and seq.num_objects == 1
    for m, got in zip(masks, seq.masks()):
        np.testing.assert_array_equal(got, m.astype(np.uint8))  # a 0/255 mask is object 1


def test_same_seed_same_sequences(tmp_path):
    cuts = [_block((200, 30, 30), 40, 24), _block((30, 200, 30), 30, 30), _block((30, 30, 200), 36, 20)]
    still = np.random.default_rng(1).integers(0, 255, (200, 400, 3), dtype=np.uint8)
    a = make_composite_davis(tmp_path / "a", cutouts=cuts, video=None, stills=[still], sequences=2, frames=5, seed=7)
    b = make_composite_davis(tmp_path / "b", cutouts=cuts, video=None, stills=[still], sequences=2, frames=5, seed=7)
    assert a == b and len(a) == 2
    for name in a:
        for sub in ("JPEGImages", "Annotations"):
            fa = sorted((tmp_path / "a" / sub / "480p" / name).iterdir())
            fb = sorted((tmp_path / "b" / sub / "480p" / name).iterdir())
            assert len(fa) == 5 and [p.read_bytes() for p in fa] == [p.read_bytes() for p in fb]


def test_bad_input_is_named():
    cut = _block((200, 30, 30))
    with pytest.raises(InputError, match="at least 2 cut-outs"):
        make_composite_davis("unused", cutouts=[cut], video=None, stills=[], sequences=1)
    bgs = [np.zeros((20, 30, 3), np.uint8), np.zeros((21, 30, 3), np.uint8)]
    with pytest.raises(InputError, match="background frame 1 is 30x21"):
        list(composite_sequence(bgs, cut, None, np.random.default_rng(0)))
    with pytest.raises(InputError, match="no background frames"):
        list(composite_sequence([], cut, None, np.random.default_rng(0)))


@pytest.mark.data
def test_cutouts_from_cityscapes_are_whole_objects(data_root):
    cuts = cutouts_from_instances(data_root / "cityscapes_panoptic" / "instances_val.json", count=6, seed=0)
    assert len(cuts) == 6
    for c in cuts:
        assert c.name in ("person", "rider", "car") and c.articulated == (c.name != "car")
        assert c.rgb.shape[:2] == c.alpha.shape and c.alpha.shape[0] >= 60 + 4
        assert set(np.unique(c.alpha)) <= {0.0, 1.0}
        assert c.alpha[:2].max() == 0 and c.alpha[:, :2].max() == 0  # the transparent border
        n, _ = cv2.connectedComponents(c.alpha.astype(np.uint8))
        assert n >= 2


def _tool():
    import importlib.util
    import sys
    from pathlib import Path

    script = Path(__file__).resolve().parents[2] / "tools" / "make_composite_vos.py"
    if not script.is_file():
        pytest.skip("tools/make_composite_vos.py is not in this checkout")
    spec = importlib.util.spec_from_file_location("make_composite_vos", script)
    mod = importlib.util.module_from_spec(spec)
    sys.modules["make_composite_vos"] = mod
    spec.loader.exec_module(mod)
    return mod


def _instances(tmp_path):
    """A COCO instance JSON (polygons) of two 200x120 images holding three whole people and one cut by the border."""
    import json

    (tmp_path / "val").mkdir()
    rng = np.random.default_rng(0)
    images, anns = [], []
    boxes = {1: [(20, 20, 50, 90), (120, 10, 150, 100), (180, 30, 200, 100)], 2: [(60, 25, 100, 110)]}
    for image_id, bs in boxes.items():
        img = rng.integers(0, 255, (120, 200, 3), dtype=np.uint8)
        cv2.imwrite(str(tmp_path / "val" / f"{image_id}.png"), img)
        images.append({"id": image_id, "file_name": f"{image_id}.png", "height": 120, "width": 200})
        for x0, y0, x1, y1 in bs:
            anns.append({"id": len(anns) + 1, "image_id": image_id, "category_id": 24, "iscrowd": 0,
                         "area": float((x1 - x0) * (y1 - y0)), "bbox": [x0, y0, x1 - x0, y1 - y0],
                         "segmentation": [[x0, y0, x1, y0, x1, y1, x0, y1]]})
    path = tmp_path / "instances_val.json"
    path.write_text(json.dumps({"images": images, "annotations": anns,
                                "categories": [{"id": 24, "name": "person"}, {"id": 26, "name": "car"}]}))
    return path


def test_tool_writes_sequences_davis_reads(tmp_path, capsys):
    tool = _tool()
    instances = _instances(tmp_path)
    cuts = cutouts_from_instances(instances, count=10, min_height=60)
    assert len(cuts) == 3  # the fourth touches the image's right border: not a whole object
    out = tmp_path / "comp"
    assert tool.main(["--out", str(out), "--instances", str(instances), "--video", "none", "--sequences", "2",
                      "--frames", "4", "--objects", "3"]) == 0
    davis = Davis(out)
    assert len(davis) == 2
    for seq in davis:
        assert len(seq) == 4 and seq.shape.width == 854 and seq.shape.height == 480 and seq.prompt().any()
    assert "2 sequences of 4 frames" in capsys.readouterr().out


def test_tool_bad_arguments_are_named(tmp_path, capsys):
    tool = _tool()
    assert tool.main(["--out", str(tmp_path / "x"), "--instances", str(_instances(tmp_path)), "--video", "none",
                      "--frames", "2"]) == 2
    assert "--frames >= 3" in capsys.readouterr().err
    missing = tmp_path / "nowhere" / "instances_val.json"
    assert tool.main(["--out", str(tmp_path / "y"), "--instances", str(missing), "--video", "none"]) == 2
    assert "nowhere" in capsys.readouterr().err
