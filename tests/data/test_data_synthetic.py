"""Synthetic scenes: exact, mutually consistent semantic / instance / panoptic truth; motion,
occlusion by depth, objects entering and leaving; determinism."""
from __future__ import annotations

import time

import numpy as np
import pytest

from edgeseg.data import Sample, SceneGenerator, SyntheticDataset, open_dataset
from edgeseg.data.synthetic import CLASSES, STUFF_CLASSES, THING_CLASSES, THING_ID_OFFSET
from edgeseg.structures import ImageShape

SMALL = ImageShape(96, 128)


def _check_frame(gen: SceneGenerator, f) -> None:
    h, w = gen.size.hw
    assert f.image.shape == (h, w, 3) and f.image.dtype == np.uint8
    assert f.labels.shape == (h, w) and f.labels.dtype == np.uint8 and f.labels.max() < len(CLASSES)
    ids = f.instance_ids
    # semantic == panoptic's semantic view, every pixel labelled
    assert np.array_equal(f.panoptic.semantic(), f.labels.astype(np.int32))
    assert (f.panoptic.segment_ids > 0).all()
    # instance masks: disjoint, exactly the visible pixels of each id, union = thing pixels
    inst = f.instances
    assert inst.masks.sum(0).max(initial=0) <= 1
    assert np.array_equal(inst.masks.any(0), ids > 0)
    assert np.array_equal(ids > 0, f.labels >= len(STUFF_CLASSES))
    for m, tid, cls, box in zip(inst.masks, inst.track_ids, inst.classes, inst.boxes):
        assert np.array_equal(m, ids == tid)
        assert (f.labels[m] == cls).all() and cls >= len(STUFF_CLASSES)
        ys, xs = np.nonzero(m)
        assert box.tolist() == [xs.min(), ys.min(), xs.max() + 1, ys.max() + 1]
    # panoptic segments: ids, classes and areas match the maps
    for s in f.panoptic.segments:
        area = int((f.panoptic.segment_ids == s.id).sum())
        assert s.area == area > 0
        if s.isthing:
            assert s.id - THING_ID_OFFSET in inst.track_ids.tolist()
        else:
            assert s.id == s.category_id + 1 and (f.labels[f.panoptic.segment_ids == s.id] == s.category_id).all()
    # stuff pixels show the static background, unchanged
    stuff = ids == 0
    assert np.array_equal(f.image[stuff], gen.background[stuff])
    assert np.array_equal(f.labels[stuff], gen.background_labels[stuff])
    # visible areas in object states agree with the maps
    for o in f.objects:
        assert o.visible_area == int((ids == o.instance_id).sum()) <= o.amodal_area


def test_ground_truth_is_consistent():
    gen = SceneGenerator(SMALL, seed=3, max_objects=5)
    for t in (0, 7, 40, 111):
        _check_frame(gen, gen.render(t))


def test_full_size_frame_and_classes():
    gen = SceneGenerator(seed=0)
    f = gen.render(0)
    assert f.image.shape == (360, 480, 3)
    assert gen.classes == STUFF_CLASSES + THING_CLASSES and gen.palette.shape == (len(CLASSES), 3)
    assert gen.thing_classes == ("circle", "rectangle", "triangle")
    _check_frame(gen, f)
    assert set(np.unique(f.labels).tolist()) >= {0, 1, 2}  # sky, ground and road all present


def test_occlusion_follows_depth():
    gen = SceneGenerator(SMALL, seed=5, max_objects=6)
    overlaps = 0
    for t in range(0, 200, 4):
        f = gen.render(t)
        objs = f.objects
        assert [o.z for o in objs] == sorted(o.z for o in objs)  # back to front
        amodal = {o.instance_id: gen.amodal_mask(o.instance_id, t) for o in objs}
        for o in objs:
            assert o.amodal_area == int(amodal[o.instance_id].sum())
        for i, back in enumerate(objs):
            for front in objs[i + 1 :]:
                both = amodal[back.instance_id] & amodal[front.instance_id]
                if both.any():
                    overlaps += 1
                    assert (f.instance_ids[both] != back.instance_id).all()
        # a pixel belongs to the nearest object covering it
        for o in objs:
            own = amodal[o.instance_id]
            nearer = [p for p in objs if p.z > o.z]
            covered = np.zeros_like(own)
            for p in nearer:
                covered |= amodal[p.instance_id]
            assert np.array_equal(f.instance_ids == o.instance_id, own & ~covered)
    assert overlaps >= 3, "the sequence should contain occlusions"


def test_objects_move_enter_and_leave():
    gen = SceneGenerator(SMALL, seed=1, max_objects=4, speed=(0.01, 0.02))
    frames = [gen.render(t) for t in range(0, 300)]
    seen = [set(f.instances.track_ids.tolist()) for f in frames]
    first, last = {}, {}
    for t, ids in enumerate(seen):
        for i in ids:
            first.setdefault(i, t)
            last[i] = t
    entered = [i for i, t in first.items() if t > 0]
    left = [i for i, t in last.items() if t < len(frames) - 1]
    assert len(entered) >= 3 and len(left) >= 3
    h, w = SMALL.hw
    for i in entered:  # a new object appears at the border, partly outside
        f = frames[first[i]]
        k = f.instances.track_ids.tolist().index(i)
        x1, y1, x2, y2 = f.instances.boxes[k]
        assert x1 == 0 or y1 == 0 or x2 == w or y2 == h
    # constant velocity: the centre moves by the velocity each frame
    o0 = {o.instance_id: o for o in frames[10].objects}
    for o in frames[11].objects:
        if o.instance_id in o0:
            a = o0[o.instance_id]
            assert np.allclose(np.subtract(o.center_xy, a.center_xy), a.velocity_xy)


def test_deterministic_random_access():
    a = SceneGenerator(SMALL, seed=11)
    b = SceneGenerator(SMALL, seed=11)
    far = a.render(250)  # renders out of order: later frames first
    fa, fb = a.render(20), b.render(20)
    assert np.array_equal(fa.image, fb.image) and np.array_equal(fa.instance_ids, fb.instance_ids)
    assert np.array_equal(far.image, b.render(250).image)
    c = SceneGenerator(SMALL, seed=12).render(20)
    assert not np.array_equal(fa.image, c.image)
    assert [f.index for f in a.frames(3, start=5)] == [5, 6, 7]


def test_render_semantic_matches_render():
    gen = SceneGenerator(SMALL, seed=4)
    img, lab = gen.render_semantic(33)
    f = gen.render(33)
    assert np.array_equal(img, f.image) and np.array_equal(lab, f.labels)


def test_render_speed():
    gen = SceneGenerator(ImageShape(360, 480), seed=0, max_objects=6)
    gen.render(0)
    t0 = time.perf_counter()
    for t in range(20):
        gen.render(t)
    per_frame = (time.perf_counter() - t0) / 20
    assert per_frame < 0.05  # ~2 ms measured on one core; generous for a loaded CI machine


def test_dataset():
    ds = SyntheticDataset(4, SMALL, seed=7)
    assert len(ds) == 4 and ds.classes == CLASSES
    s = ds[2]
    assert isinstance(s, Sample) and s.image.shape == (96, 128, 3) and s.labels.max() < len(CLASSES)
    assert np.array_equal(ds[2].image, s.image) and s.name == "synthetic_7_0_000002"
    assert not np.array_equal(ds[1].image, s.image)
    val = open_dataset("synthetic:3,seed=7,size=128x96", split="val")
    train = open_dataset("synthetic:3,seed=7,size=128x96", split="train")
    assert len(val) == 3 and val[0].image.shape == (96, 128, 3)
    assert np.array_equal(train[2].image, s.image)  # train is stream 0
    assert not np.array_equal(val[2].image, s.image)  # splits never share scenes


def test_bad_arguments():
    from edgeseg.errors import DataError, InputError

    with pytest.raises(InputError, match="ImageShape"):
        SceneGenerator((96, 128))
    with pytest.raises(DataError, match="number of scenes"):
        open_dataset("synthetic:many")
    with pytest.raises(InputError, match="no object"):
        SceneGenerator(SMALL, seed=0).amodal_mask(99999, 0)
