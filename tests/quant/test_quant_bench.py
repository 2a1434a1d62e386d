"""tools/bench/int8.py: bundles made with --make are labelled untrained and get no accuracy figures;
a trained bundle's mIoU equals ``edgeseg eval``'s."""
import json
import shutil

import pytest

pytest.importorskip("onnxruntime")

import edgeseg  # noqa: E402
from edgeseg.data import open_dataset, write_image, write_label  # noqa: E402
from edgeseg.eval import evaluate  # noqa: E402

import quant_tiny as qt  # noqa: E402
from quant_graphs import load_bench_script  # noqa: E402


@pytest.fixture(scope="module")
def bench():
    mod = load_bench_script("int8.py", "bench_int8")
    return mod


@pytest.fixture
def data(tmp_path):
    """A calibration image folder and a labelled folder dataset with the tiny model's classes."""
    for i, s in enumerate(qt.scenes(6, seed=5)):
        write_image(tmp_path / "calib" / f"{i}.png", s.image)
    for i, s in enumerate(qt.scenes(4, seed=7)):
        write_image(tmp_path / "img" / f"{i}.png", s.image)
        write_label(tmp_path / "mask" / f"{i}.png", s.labels)
    (tmp_path / "classes.txt").write_text("\n".join(qt.CLASSES) + "\n")
    return tmp_path


def _argv(bundle, data, *extra):
    ev = f"folder:{data / 'img'},{data / 'mask'},classes={data / 'classes.txt'}"
    return [str(bundle), "--calib", str(data / "calib"), "--method", "minmax", "--eval", ev, "--targets", "cpu",
            "--threads", "1", "--runs", "2", *extra]


def test_trained_bundle_row_scores_like_edgeseg_eval(bench, trained, data, tmp_path):
    bundle = shutil.copytree(trained, tmp_path / "b.edgeseg")
    out = tmp_path / "rows.json"
    assert bench.main(_argv(bundle, data, "--json", str(out))) == 0
    row = json.loads(out.read_text())["rows"][0]
    ds = open_dataset(f"folder:{data / 'img'},{data / 'mask'},classes={data / 'classes.txt'}", split="val")
    with edgeseg.load(bundle, backend="onnxruntime", threads=1) as p:
        ref = evaluate(p, ds, progress=False, boundary=False)
    assert row["weights"] == "trained" and row["accuracy"] is True
    assert row["cpu"]["fp32_miou"] == 100.0 * ref.miou and row["cpu"]["fp32_miou"] > 90
    assert row["cpu"]["fp32_ms"] > 0 and row["cpu"]["int8_ms"] > 0


def test_made_bundle_is_labelled_untrained_without_accuracy(bench, trained, data, tmp_path):
    """A --make bundle (here the tiny one standing in for a registry export) without --latency-only."""
    bundle = shutil.copytree(trained, tmp_path / "m.edgeseg")
    ns = bench.build_parser().parse_args(_argv(bundle, data))
    assert ns.latency_only is False and ns.eval
    row = bench.bench_one(bundle, ns, made=True)
    assert row["weights"] == "untrained (--make)" and row["accuracy"] is False
    assert row["cpu"]["fp32_miou"] is None and row["cpu"]["int8_miou"] is None
    assert row["cpu"]["fp32_ms"] > 0
