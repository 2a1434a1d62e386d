"""Calibration readers: image folders, videos (uniform and scene-change sampling), recipes, live frames."""
from pathlib import Path

import numpy as np
import pytest

from edgeseg.errors import DataError, InputError
from edgeseg.quant.calibration import (CalibrationRecipe, FeedReader, collect_frames, load_recipe, resolve_calibration,
                                       scene_change_indices, split_holdout, take_frames)
from edgeseg.structures import ImageShape, InputSpec

SPEC = InputSpec(size=ImageShape(24, 32), mean=(0.5, 0.5, 0.5), std=(0.25, 0.25, 0.25))


def _png_folder(tmp_path, n=6):
    import cv2

    d = tmp_path / "imgs"
    d.mkdir()
    imgs = []
    for i in range(n):
        rgb = np.full((30, 40, 3), (10 * i, 5, 200 - 10 * i), np.uint8)
        cv2.imwrite(str(d / f"{i:02d}.png"), rgb[..., ::-1])
        imgs.append(rgb)
    (d / "notes.txt").write_text("not an image")
    return d, imgs


def test_folder_reader_feeds_exactly_what_inference_sees(tmp_path):
    d, imgs = _png_folder(tmp_path)
    frames = collect_frames(CalibrationRecipe(source=str(d), frames=3), progress=False)
    assert len(frames) == 3
    # uniform sampling over 6 files: indices 0, 2 (round(2.5) = 2), 5
    for got, want in zip(frames, [imgs[0], imgs[2], imgs[5]]):
        np.testing.assert_array_equal(got, want)
    reader = FeedReader(frames, SPEC)
    feed = reader.get_next()
    assert list(feed) == ["images"] and feed["images"].shape == (1, 3, 24, 32)
    # pixel value 0 in channel R -> (0/255 - 0.5)/0.25 = -2
    np.testing.assert_allclose(feed["images"][0, 0], -2.0)
    np.testing.assert_array_equal(feed["images"], SPEC.preprocess(frames[0])[0])
    assert sum(1 for _ in iter(reader.get_next, None)) == 2
    reader.rewind()
    assert reader.get_next() is not None


def test_an_image_that_does_not_decode_is_skipped_and_replaced(tmp_path, caplog):
    """One bad file in a user's folder of frames stopped `edgeseg quantize` ('cannot decode image'): it is
    skipped, said, and another image of the folder takes its place; a folder of nothing readable is refused."""
    d, imgs = _png_folder(tmp_path)
    (d / "02.png").write_bytes(b"not a png")
    with caplog.at_level("WARNING", logger="edgeseg.quant.calibration"):
        frames = collect_frames(CalibrationRecipe(source=str(d), frames=3), progress=False)
    assert "skipping an image that cannot be read: 02.png" in caplog.text
    assert len(frames) == 3  # 0 and 5 as picked, then the nearest image not picked (1, before 3) in 2's place
    for got, want in zip(frames, [imgs[0], imgs[5], imgs[1]]):
        np.testing.assert_array_equal(got, want)
    (d / "05.png").write_bytes(b"not a png")  # a bad image at the end is replaced from the end (spread kept)
    frames = collect_frames(CalibrationRecipe(source=str(d), frames=3), progress=False)
    for got, want in zip(frames, [imgs[0], imgs[1], imgs[4]]):
        np.testing.assert_array_equal(got, want)
    for f in d.glob("*.png"):
        f.write_bytes(b"junk")
    with pytest.raises(DataError, match="none of its images could be read"):
        collect_frames(CalibrationRecipe(source=str(d), frames=3), progress=False)


def _video(tmp_path, scenes=(40, 200, 120), per_scene=5):
    import cv2

    path = tmp_path / "clip.mp4"
    w = cv2.VideoWriter(str(path), cv2.VideoWriter_fourcc(*"mp4v"), 10, (64, 48))
    assert w.isOpened()
    for level in scenes:
        for k in range(per_scene):
            w.write(np.full((48, 64, 3), level + k, np.uint8))
    w.release()
    return path


def test_video_uniform_sampling(tmp_path):
    path = _video(tmp_path)
    frames = collect_frames(CalibrationRecipe(source=str(path), frames=3, sampling="uniform"), progress=False)
    # 15 frames, uniform picks 0, 7, 14: grey levels ~40, ~202, ~124 (mp4v is lossy: +-4)
    means = [f.mean() for f in frames]
    np.testing.assert_allclose(means, [40, 202, 124], atol=4)


def test_video_scene_change_sampling(tmp_path):
    path = _video(tmp_path)
    assert scene_change_indices(str(path), 3, threshold=20) == [0, 5, 10]
    frames = collect_frames(CalibrationRecipe(source=str(path), frames=3, sampling="scene", scene_threshold=20), progress=False)
    np.testing.assert_allclose([f.mean() for f in frames], [40, 200, 120], atol=4)


@pytest.mark.parametrize("sampling, n, want", [
    ("uniform", 4, [0, 5, 9, 14]),   # linspace(0, 14, 4) = 0, 4.67, 9.33, 14 -> rounded
    ("first", 3, [0, 1, 2]),
    ("scene", 3, [0, 5, 10]),        # the scene cuts
    ("scene", 5, [0, 4, 5, 7, 10]),  # 3 cuts + the first new ones of the uniform spread 0, 4, 7, 10, 14
])
def test_video_sampling_gives_the_same_frames_as_a_plain_opencv_decode(tmp_path, sampling, n, want):
    path = _video(tmp_path)
    from video_ref import decode_video_rgb

    ref = decode_video_rgb(path)
    assert len(ref) == 15
    frames = collect_frames(CalibrationRecipe(source=str(path), frames=n, sampling=sampling, scene_threshold=20),
                            progress=False)
    assert len(frames) == len(want)
    for got, i in zip(frames, want):
        np.testing.assert_array_equal(got, ref[i])  # bit-identical decoded pixels, RGB order


def test_unreadable_calibration_video_names_it(tmp_path):
    bad = tmp_path / "noise.mp4"
    bad.write_bytes(np.random.default_rng(0).integers(0, 256, 4096, dtype=np.uint8).tobytes())
    with pytest.raises(DataError, match="calibration video .*noise.mp4"):
        collect_frames(CalibrationRecipe(source=str(bad), frames=2), progress=False)


def test_recipe_toml_and_resolution(tmp_path):
    d, _ = _png_folder(tmp_path)
    rec = tmp_path / "mine.toml"
    rec.write_text('[calibration]\nsource = "imgs"\nframes = 4\nmethod = "percentile"\npercentile = 99.9\n')
    r = load_recipe(rec)
    assert (r.frames, r.method, r.percentile, r.name) == (4, "percentile", 99.9, "mine")
    assert r.resolved_source() == str(d)
    r2 = resolve_calibration(str(rec), frames=2, method="mse")
    assert (r2.frames, r2.method) == (2, "mse")
    bad = tmp_path / "bad.toml"
    bad.write_text('source = "x"\nframs = 3\n')
    with pytest.raises(DataError, match="unknown key"):
        load_recipe(bad)
    with pytest.raises(InputError, match="method"):
        CalibrationRecipe(source="x", method="kl")


@pytest.mark.parametrize("line, match", [  # session 50's fuzzing: each a TypeError/AttributeError traceback
    ("frames = 2.5", "frames must be a whole number, got 2.5"),
    ("split = 0", "split must be a string, got 0"),
    ("split = true", "split must be a string, got True"),
    ("source = 5", "source must be a path or dataset spec"),
    ("seed = \"1\"", "seed must be a whole number"),
    ("holdout = nan", "holdout must be a finite number"),
    ("percentile = \"99\"", "percentile must be a finite number"),
])
def test_recipe_values_of_the_wrong_type_are_named(tmp_path, line, match):
    rec = tmp_path / "r.toml"
    keys = {"source": 'source = "synthetic:8"', "frames": "frames = 8"}
    keys[line.split()[0]] = line
    rec.write_text("[calibration]\n" + "\n".join(keys.values()) + "\n")
    with pytest.raises(InputError, match=match) as e:
        load_recipe(rec)
    assert "[calibration] table" in e.value.fix
    rec.write_text('calibration = "synthetic:8"\n')
    with pytest.raises(DataError, match="calibration is a str, not a table"):
        load_recipe(rec)


def test_shipped_recipes_parse():
    for name in ("camvid", "dashcam", "street", "synthetic"):
        r = resolve_calibration(name)
        assert r.frames > 0 and r.method in ("entropy", "percentile", "minmax", "mse")
    assert resolve_calibration("camvid").frames == 200 and resolve_calibration("camvid").method == "entropy"


def test_live_frames_and_holdout():
    live = (np.full((8, 8, 3), i, np.uint8) for i in range(100))
    got = take_frames(live, 10)
    assert [int(f[0, 0, 0]) for f in got] == list(range(10))
    cal, held = split_holdout(got, 0.2)
    assert [int(f[0, 0, 0]) for f in held] == [4, 9] and len(cal) == 8
    with pytest.raises(DataError, match="RGB uint8"):
        take_frames([np.zeros((8, 8), np.uint8)], 1)


def test_several_sources_share_the_frames(tmp_path):
    """A list of sources: frames shared evenly (remainder to the first), each source sampled as the recipe says."""
    d, imgs = _png_folder(tmp_path)
    rec = tmp_path / "multi.toml"
    rec.write_text('[calibration]\nsource = ["imgs", "synthetic:4,size=32x24"]\nframes = 5\nsampling = "first"\n')
    r = load_recipe(rec)
    assert r.sources == ("imgs", "synthetic:4,size=32x24") and r.to_dict()["source"] == ["imgs", "synthetic:4,size=32x24"]
    assert r.resolved_sources() == [str(d), "synthetic:4,size=32x24"]
    frames = collect_frames(r, progress=False)
    assert len(frames) == 5
    for got, want in zip(frames[:3], imgs[:3]):  # 3 from the folder (5 // 2 + 1), then 2 generated frames
        np.testing.assert_array_equal(got, want)
    assert all(f.shape == (24, 32, 3) for f in frames[3:])
    with pytest.raises(InputError, match="several|sources"):
        r.resolved_source()
    bad = tmp_path / "empty.toml"
    bad.write_text('source = []\n')
    with pytest.raises((DataError, InputError), match="non-empty list"):
        load_recipe(bad)


def test_dash_named_dataset_specs_resolve_as_specs(tmp_path):
    """``coco-instance:`` / ``cityscapes-camvid:`` are dataset kinds, not relative paths; ``C:`` is not a kind."""
    r = CalibrationRecipe(source="cityscapes-camvid:data/cs,images=x", base_dir=str(tmp_path))
    assert r.resolved_source() == f"cityscapes-camvid:{tmp_path / 'data/cs'},images=x"


@pytest.mark.data
def test_street_recipe_mixes_sequences_and_cities(data_root):
    frames = collect_frames(resolve_calibration("street", frames=4), progress=False)
    assert [f.shape for f in frames] == [(360, 480, 3)] * 2 + [(320, 640, 3)] * 2  # 2 CamVid, 2 Cityscapes


@pytest.mark.data
def test_camvid_and_dashcam_recipes_on_real_data(data_root):
    r = resolve_calibration("camvid", frames=3)
    frames = collect_frames(r, progress=False)
    assert len(frames) == 3 and all(f.shape == (360, 480, 3) for f in frames)
    v = collect_frames(resolve_calibration("dashcam", frames=4), progress=False)
    assert len(v) == 4 and v[0].shape == (540, 960, 3)


def test_recipe_names_resolve_from_any_working_directory(tmp_path, monkeypatch):
    import edgeseg.paths
    from edgeseg.quant.calibration import find_recipe, recipe_names

    repo = Path(edgeseg.paths.PACKAGE_DIR).parent / "calibration"
    shipped = Path(edgeseg.paths.PACKAGE_DIR) / "quant" / "recipes"
    monkeypatch.chdir(tmp_path)  # no calibration/ here
    assert find_recipe("synthetic") == repo / "synthetic.toml"
    r = resolve_calibration("synthetic")
    assert (r.source, r.frames, r.method, r.name) == ("synthetic:64", 64, "minmax", "synthetic")
    # an installed package (no repository next to it): the copies shipped in edgeseg/quant/recipes/
    monkeypatch.setattr(edgeseg.paths, "PACKAGE_DIR", tmp_path / "site-packages" / "edgeseg")
    assert find_recipe("camvid") == shipped / "camvid.toml"
    assert resolve_calibration("camvid").frames == 200 and recipe_names() == ["camvid", "dashcam", "street", "synthetic"]
    # ./calibration in the working directory comes first
    (tmp_path / "calibration").mkdir()
    (tmp_path / "calibration" / "camvid.toml").write_text('[calibration]\nsource = "synthetic:8"\nframes = 7\n')
    assert resolve_calibration("camvid").frames == 7
    with pytest.raises(DataError, match="camvd.*not found") as e:
        resolve_calibration("camvd")
    assert "camvid, dashcam, street, synthetic" in e.value.fix


def test_shipped_recipe_copies_equal_the_repository_recipes():
    import edgeseg.paths

    repo = Path(edgeseg.paths.PACKAGE_DIR).parent / "calibration"
    shipped = Path(edgeseg.paths.PACKAGE_DIR) / "quant" / "recipes"
    if not repo.is_dir():
        pytest.skip("not a source checkout")
    names = sorted(f.name for f in repo.glob("*.toml"))
    assert names == sorted(f.name for f in shipped.glob("*.toml")) == ["camvid.toml", "dashcam.toml", "street.toml", "synthetic.toml"]
    for n in names:
        assert (shipped / n).read_bytes() == (repo / n).read_bytes(), f"copy calibration/{n} to edgeseg/quant/recipes/{n}"


def test_calibration_chunk_fits_the_memory_available(tmp_path):
    """ONNX Runtime's calibrators hold every float tensor of every frame of a chunk: the chunk shrinks to
    what a quarter of the available memory holds, and a model whose one frame does not fit is refused
    before any work with the sizes and a fix (FC-DenseNet56 at 480x360: 3.4 GiB a frame, 8 frames at
    once were killed by the kernel on a 24 GiB machine). Sizes by hand on a two-node graph."""
    import onnx
    from onnx import TensorProto, helper

    from edgeseg.errors import QuantizationError
    from edgeseg.quant.ranges import activation_bytes, fitting_chunk

    w = helper.make_tensor("w", TensorProto.FLOAT, [8, 3, 1, 1], [0.1] * 24)
    graph = helper.make_graph(
        [helper.make_node("Conv", ["x", "w"], ["c"]), helper.make_node("Relu", ["c"], ["y"])], "g",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, 3, 64, 32])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, [1, 8, 64, 32])], [w])
    path = tmp_path / "m.onnx"
    onnx.save(helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)]), str(path))
    per_frame = 2 * 8 * 64 * 32 * 4  # c and y: [1, 8, 64, 32] float32 each
    assert activation_bytes(path) == per_frame
    assert fitting_chunk(path, 8, available=100 * per_frame) == 8  # plenty: the asked chunk
    assert fitting_chunk(path, 8, available=12 * per_frame) == 3  # a quarter holds 3 frames
    assert fitting_chunk(path, 8, available=4 * per_frame) == 1
    with pytest.raises(QuantizationError, match="per frame, more than 25% of the"):
        fitting_chunk(path, 8, available=3 * per_frame)


def test_the_report_records_the_frames_that_calibrated_not_only_those_asked(tmp_path):
    """report.json said calibration.frames 200 (the recipe's) beside frames 7 (what calibrated): both kept now,
    named apart; and a table cell never measured prints n/a, not None."""
    from edgeseg.cli._common import _fmt
    from edgeseg.quant.api import _recipe_record

    d, _ = _png_folder(tmp_path)
    recipe = CalibrationRecipe(source=str(d), frames=200)
    rec = _recipe_record(recipe, len(collect_frames(recipe, progress=False)))
    assert (rec["frames"], rec["frames_asked"]) == (6, 200)
    assert "frames_asked" not in _recipe_record(CalibrationRecipe(source=str(d), frames=6), 6)
    rec = _recipe_record(CalibrationRecipe(source=str(d), frames=6), 6, held=1)  # 1 of the 6 kept to rank layers
    assert rec["frames"] == 6 and rec["held_out"] == 1 and "frames_asked" not in rec
    assert (_fmt(None), _fmt(0.5), _fmt(3)) == ("n/a", "0.5", "3")


def test_frames_far_larger_than_the_network_are_kept_smaller():
    """A memory audit: calibration held every frame at the source's resolution (200 frames of a 4K clip: 4.6 GiB for a
    480x360 model). A frame over twice the network's size on both sides is kept at twice it, its aspect kept; frames
    the network's resize barely shrinks (the dash-cam's 960x540 for 480x360) stay exactly as read."""
    from edgeseg.quant.calibration import kept_size, take_frames

    net = ImageShape(360, 480)
    assert kept_size((2160, 3840), net) == (720, 1280)  # one side at twice the network's, aspect kept
    assert kept_size((540, 960), net) is None and kept_size((100, 100), net) is None
    assert kept_size((2160, 3840), None) is None  # any size: as read
    big = np.random.default_rng(0).integers(0, 256, (2160, 3840, 3), dtype=np.uint8)
    small = np.zeros((540, 960, 3), np.uint8)
    got = take_frames(iter([big, small]), 2, network=net)
    assert [g.shape for g in got] == [(720, 1280, 3), (540, 960, 3)] and got[1] is small
    assert abs(float(got[0].mean()) - float(big.mean())) < 0.5  # an area average of the same picture
    # a plain resize to a fixed size (the shipped bundles'): the very tensor the network gets from the 4K frame
    spec = InputSpec(size=net)
    (kept,) = take_frames(iter([big]), 1, network=spec)
    assert kept.shape == (360, 480, 3) and np.array_equal(spec.preprocess(kept)[0], spec.preprocess(big)[0])
