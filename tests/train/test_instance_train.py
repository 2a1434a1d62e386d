"""Instance training: SOLO target assignment on hand-made frames, the losses, augmentation keeping
masks aligned, a short training run whose loss falls, and resume equal to an uninterrupted run."""
from __future__ import annotations

import itertools

import numpy as np
import pytest
import torch

from edgeseg.data.synthetic import CLASSES, THING_CLASSES, SceneGenerator
from edgeseg.errors import InputError
from edgeseg.models import create_model
from edgeseg.structures import ImageShape, InstanceResult
from edgeseg.train.instance import (
    InstanceTrainConfig, InstanceTrainer, SoloTargets, augment_sample, dice_loss, sigmoid_focal_loss, solo_loss,
    solo_targets, synthetic_instances, thing_labels,
)

GRIDS = (8, 4)                       # 8 px and 16 px cells on a 64 x 64 frame
RANGES = ((1.0, 20.0), (16.0, 64.0))


def _box(y0, y1, x0, x1, size=64):
    m = np.zeros((size, size), bool)
    m[y0:y1, x0:x1] = True
    return m


def _assign(masks, labels, sigma=0.2):
    return solo_targets(np.stack(masks), np.asarray(labels, np.int64), num_grids=GRIDS, num_classes=3, ranges=RANGES,
                        mask_size=(16, 16), sigma=sigma)


def test_targets_on_a_hand_made_frame():
    small = _box(8, 16, 8, 16)     # 8 x 8: scale 8 -> level 0 only; centre (12, 12) -> cell (1, 1)
    large = _box(28, 60, 32, 64)   # 32 x 32: scale 32 -> level 1 only; centre x 48 sits on a cell edge
    t = _assign([small, large], [2, 0])
    assert t.labels.shape == (8 * 8 + 4 * 4,)
    # level 0: cell 1*8+1; level 1 (offset 64): centre cell (2, 3), region x 44.8..51.2 reaches column 2 too
    assert t.positive.tolist() == [9, 64 + 2 * 4 + 2, 64 + 2 * 4 + 3]
    assert t.labels[9] == 2 and t.labels[74] == 0 and t.labels[75] == 0
    assert (np.delete(t.labels, [9, 74, 75]) == 3).all()  # background everywhere else
    # mask targets at stride 4 (16 x 16): the boxes divided by 4
    assert t.masks.shape == (3, 16, 16) and t.masks.dtype == np.float32
    assert np.array_equal(t.masks[0], _box(2, 4, 2, 4, 16).astype(np.float32))
    assert np.array_equal(t.masks[1], _box(7, 15, 8, 16, 16).astype(np.float32))
    assert np.array_equal(t.masks[2], t.masks[1])


def test_centre_region_is_clipped_to_3x3_cells():
    big = _box(16, 48, 16, 48)  # scale 32 (level 1 only); with sigma 1 the region spans the whole box
    t = _assign([big], [1], sigma=1.0)
    # centre (32, 32) -> cell (2, 2) of 4; region rows/cols 1..3 (the box edge 48 falls in cell 3) = 3 x 3
    rows, cols = np.divmod(t.positive - 64, 4)
    assert sorted(set(rows.tolist())) == [1, 2, 3] and sorted(set(cols.tolist())) == [1, 2, 3] and len(t.positive) == 9
    # a larger sigma cannot spread further than one cell around the centre cell
    t2 = _assign([_box(2, 62, 2, 62)], [1], sigma=1.0)  # scale 60, centre cell (2, 2): still 3 x 3
    assert len(t2.positive) == 9


def test_instance_in_two_levels_and_smaller_wins_shared_cells():
    both = _box(20, 38, 20, 38)       # 18 x 18: scale 18 is in both ranges (1..20 and 16..64)
    t = _assign([both], [0])
    assert [int(p) < 64 for p in t.positive] == [True, False]
    # two instances with the same centre cell on level 1: the smaller one owns it, whatever the order
    big, inner = _box(0, 64, 0, 64), _box(24, 40, 24, 40)  # scales 64 and 16
    for order in ([big, inner], [inner, big]):
        labels = [1, 2] if order[0] is big else [2, 1]
        t = _assign(order, labels)
        assert t.labels[64 + 2 * 4 + 2] == 2


def test_empty_frame_has_no_positives():
    t = solo_targets(np.zeros((0, 64, 64), bool), np.zeros(0, np.int64), num_grids=GRIDS, num_classes=3,
                     ranges=RANGES, mask_size=(16, 16))
    assert len(t.positive) == 0 and (t.labels == 3).all() and t.masks.shape == (0, 16, 16)


def test_losses_against_hand_numbers():
    logits = torch.tensor([[0.0, 2.0]])
    targets = torch.tensor([[1.0, 0.0]])
    p = torch.sigmoid(torch.tensor(2.0))
    expect = 0.25 * 0.5**2 * np.log(2) + 0.75 * float(p) ** 2 * -np.log(1 - float(p))
    assert float(sigmoid_focal_loss(logits, targets, 0.25, 2.0)) == pytest.approx(expect, rel=1e-5)
    probs = torch.tensor([[1.0, 1.0, 0.0, 0.0], [0.5, 0.5, 0.5, 0.5]])
    tgt = torch.tensor([[1.0, 1.0, 0.0, 0.0], [1.0, 1.0, 0.0, 0.0]])
    d = dice_loss(probs, tgt, eps=0.0)
    assert d.tolist() == pytest.approx([0.0, 1 - 2 * 1.0 / (1.0 + 2.0)])


def test_solo_loss_pairs_kernels_with_positive_cells():
    n, e = 80, 2
    feats = torch.zeros(1, e, 4, 4)
    feats[0, 0, :2] = 10.0   # channel 0 is "top half"
    feats[0, 1, 2:] = 10.0   # channel 1 is "bottom half"
    kernels = torch.zeros(1, n, e)
    kernels[0, 5] = torch.tensor([1.0, -1.0])  # cell 5 predicts the top half
    top = np.zeros((1, 4, 4), np.float32)
    top[0, :2] = 1
    labels = np.full(n, 3, np.int64)
    labels[5] = 1
    target = SoloTargets(labels, np.array([5]), top)
    out = {"categories": torch.full((1, n, 3), -10.0), "kernels": kernels, "mask_features": feats}
    good = solo_loss(out, [target])
    assert float(good["mask"]) < 1e-3
    target_bottom = SoloTargets(labels, np.array([5]), 1 - top)
    assert float(solo_loss(out, [target_bottom])["mask"]) > 0.99


def test_thing_labels_match_by_name():
    frame = SceneGenerator(ImageShape(60, 80), seed=5).render(30)
    res = frame.instances
    assert len(res) > 0
    labels = thing_labels(res, THING_CLASSES)
    assert [THING_CLASSES[i] for i in labels] == [CLASSES[c] for c in res.classes]
    one = _result([_box(0, 8, 0, 8)], [CLASSES.index("circle")], ImageShape(64, 64))
    with pytest.raises(InputError, match="'circle' is not one of the model's thing classes"):
        thing_labels(one, ("rectangle", "triangle"))


def _result(masks, classes, shape):
    return InstanceResult(boxes=np.zeros((len(masks), 4), np.float32), scores=np.ones(len(masks), np.float32),
                          classes=np.asarray(classes, np.int32), image_shape=shape, masks=np.stack(masks),
                          class_names=CLASSES)


def test_augmentation_keeps_masks_on_their_pixels():
    shape = ImageShape(64, 80)
    a, b = _box(5, 30, 10, 40, 80)[:64], _box(30, 60, 50, 75, 80)[:64]
    image = np.zeros((64, 80, 3), np.uint8)
    image[a] = (255, 0, 0)
    image[b] = (0, 255, 0)
    res = _result([a, b], [3, 4], shape)
    s = augment_sample(image, res, THING_CLASSES, shape, None)  # no rng: a plain resize (here none)
    assert np.array_equal(s.masks, res.masks) and s.labels.tolist() == [0, 1]
    for seed in range(8):
        s = augment_sample(image, res, THING_CLASSES, ImageShape(48, 64), np.random.default_rng(seed), scale=(0.6, 1.6))
        assert s.image.shape == (48, 64, 3) and s.masks.shape[1:] == (48, 64) and len(s.labels) == len(s.masks)
        for m, label in zip(s.masks, s.labels):
            painted = s.image[..., int(label)] > 128  # red for the first object, green for the second
            assert (painted & m).sum() / (painted | m).sum() > 0.9  # only the resampled edges may differ


def test_short_training_lowers_the_loss():
    torch.set_num_threads(1)
    torch.manual_seed(0)
    size = ImageShape(64, 96)
    model = create_model("test_solov2", num_classes=3, thing_classes=list(THING_CLASSES),
                         fpn_channels=16, head_channels=16, mask_channels=16, mask_inner_channels=16)
    cfg = InstanceTrainConfig(size=size, epochs=1, steps_per_epoch=40, batch_size=4, optimizer="adamw", lr=3e-3,
                              weight_decay=1e-4, schedule="cosine", warmup_steps=5, scale=(1.0, 1.0), hflip=False)
    trainer = InstanceTrainer(model, cfg)
    frames = list(itertools.islice(synthetic_instances(size, seed=0, scenes=8), 8))
    losses = []
    for step in range(cfg.steps_per_epoch):
        batch = [frames[(step * 4 + j) % 8] for j in range(4)]
        losses.append(trainer.train_step(batch, 0))
    first = np.mean([r["loss"] for r in losses[:5]])
    last = np.mean([r["loss"] for r in losses[-5:]])
    assert last < 0.7 * first, (first, last)
    assert np.mean([r["mask"] for r in losses[-5:]]) < np.mean([r["mask"] for r in losses[:5]])
    assert np.mean([r["category"] for r in losses[-5:]]) < np.mean([r["category"] for r in losses[:5]])


def _trainer(out_dir):
    torch.manual_seed(0)
    model = create_model("test_solov2", num_classes=3, thing_classes=list(THING_CLASSES))
    cfg = InstanceTrainConfig(size=ImageShape(48, 64), epochs=2, steps_per_epoch=2, batch_size=2, warmup_steps=1)
    return InstanceTrainer(model, cfg, out_dir=out_dir, model_name="test_solov2")


def test_resume_equals_an_uninterrupted_run(tmp_path):
    torch.set_num_threads(1)
    data = lambda start: synthetic_instances(ImageShape(48, 64), seed=1, start=start, scenes=4)  # noqa: E731
    straight = _trainer(tmp_path / "a")
    straight.fit(data)
    first = _trainer(tmp_path / "b")
    first.fit(data, epochs=1)
    resumed = _trainer(tmp_path / "b")
    history = resumed.fit(data, resume=tmp_path / "b")
    assert [h.epoch for h in history] == [1, 2] and resumed.step == 4
    assert history[1].loss == pytest.approx(straight.history[1].loss, rel=1e-5)
    for k, v in straight.model.state_dict().items():
        assert torch.allclose(v.float(), resumed.model.state_dict()[k].float(), atol=1e-6), k
    from edgeseg.models import read_checkpoint_meta

    meta = read_checkpoint_meta(tmp_path / "b" / "model.safetensors")
    assert meta.model_name == "test_solov2" and meta.extra["classes"] == list(THING_CLASSES)
    assert meta.extra["task"] == "instance" and meta.extra["input_spec"]["size"] == {"height": 48, "width": 64}


def test_resume_refuses_a_foreign_file(tmp_path):
    torch.save({"format": "something-else"}, tmp_path / "last.pt")
    from edgeseg.errors import ModelError

    with pytest.raises(ModelError, match="not an edgeseg instance-training checkpoint"):
        _trainer(None).load(tmp_path)


def test_empty_instance_results_train():
    size = ImageShape(48, 64)
    trainer = _trainer(None)
    empty = InstanceResult.empty(size)
    image = SceneGenerator(size, seed=2, max_objects=0).render(0).image
    res = trainer.train_step([(image, empty), (image, empty)], 0)
    assert np.isfinite(res["loss"]) and res["mask"] == 0.0


def test_augmentation_crops_to_the_training_crop():
    shape = ImageShape(64, 80)
    a = _box(5, 30, 10, 40, 80)[:64]
    image = np.zeros((64, 80, 3), np.uint8)
    image[a] = (255, 0, 0)
    res = _result([a], [3], shape)
    s = augment_sample(image, res, THING_CLASSES, shape, None, crop=ImageShape(32, 48))  # no rng: the top-left crop
    assert s.image.shape == (32, 48, 3) and np.array_equal(s.masks[0], a[:32, :48])
    for seed in range(6):  # objects keep the scale they have at the network size, only the window moves
        s = augment_sample(image, res, THING_CLASSES, shape, np.random.default_rng(seed), scale=(1.0, 1.0),
                           hflip=False, crop=ImageShape(32, 48))
        assert s.image.shape == (32, 48, 3)
        if len(s.masks):
            assert np.array_equal(s.masks[0], s.image[..., 0] > 128)
            assert s.masks[0].sum() <= a.sum()


def test_dataset_stream_is_seeded_per_epoch_and_drops_crowds(tmp_path):
    import json

    from edgeseg.data import CocoInstances, write_image
    from edgeseg.train.instance import dataset_instances

    (tmp_path / "img").mkdir()
    images, anns = [], []
    for i in range(3):
        write_image(tmp_path / "img" / f"{i}.png", np.full((20, 30, 3), 40 * i, np.uint8))
        images.append({"id": i + 1, "file_name": f"{i}.png", "height": 20, "width": 30})
        anns.append({"id": 10 + i, "image_id": i + 1, "category_id": 26, "iscrowd": 0, "area": 20.0,
                     "bbox": [2, 2, 5, 4], "segmentation": [[2, 2, 7, 2, 7, 6, 2, 6]]})
    anns.append({"id": 99, "image_id": 1, "category_id": 24, "iscrowd": 1, "area": 30.0,
                 "bbox": [10, 10, 6, 5], "segmentation": [[10, 10, 16, 10, 16, 15, 10, 15]]})
    (tmp_path / "inst.json").write_text(json.dumps({
        "images": images, "annotations": anns,
        "categories": [{"id": 24, "name": "person"}, {"id": 26, "name": "car"}]}))
    ds = CocoInstances(tmp_path / "inst.json", tmp_path / "img")
    got = list(itertools.islice(dataset_instances(ds, seed=5), 6))
    order = [int(img[0, 0, 0]) // 40 for img, _ in got]
    assert sorted(order[:3]) == [0, 1, 2] and sorted(order[3:]) == [0, 1, 2]  # every image once per epoch
    again = [int(img[0, 0, 0]) // 40 for img, _ in itertools.islice(dataset_instances(ds, seed=5, start=2), 4)]
    assert again == order[2:6]  # a pure function of (seed, k): resume continues the same stream
    for _, r in got:
        assert len(r) == 1 and r.class_names == ("person", "car") and r.class_names[int(r.classes[0])] == "car"
        assert r.masks[0].sum() == 20  # the crowd region (image 1) is left out
    assert thing_labels(got[0][1], ("car", "person")).tolist() == [0]


def test_train_instance_continues_from_a_shipped_bundle(tmp_path):
    """tools/train_instance.py --init BUNDLE: the zoo's SOLOv2 (folded BatchNorms in the encoder,
    GroupNorms in the heads) comes back whole, and a few steps at a small learning rate keep what the
    bundle's own weights find on held-out scenes (the tool's mask-IoU check on the same 20 scenes)."""
    import itertools
    import json

    from edgeseg.models.folded import load_model_weights
    from edgeseg.train.instance import mask_iou_check, synthetic_instances
    from tool_loader import REPO, load_tool

    tool = load_tool("train_instance")
    bundle = REPO / "edgeseg" / "zoo" / "shapes-instance.edgeseg"
    out = tmp_path / "run"
    assert tool.main(["--model", "solov2_mobilenetv3_small", "--size", "192x144", "--epochs", "1",
                      "--steps-per-epoch", "4", "--batch", "4", "--lr", "1e-5", "--warmup", "0", "--threads", "2",
                      "--eval-frames", "20", "--init", str(bundle), "--out", str(out)]) == 0
    after = json.loads((out / "eval.json").read_text())
    settings = json.loads((out / "run.json").read_text())
    model, _, spec = tool.build(settings, tool.training_data(settings)[0])
    load_model_weights(model, bundle)
    scenes = synthetic_instances(spec.size, seed=1000, scenes=20)  # the tool's held-out scenes (seed + 1000)
    ref = mask_iou_check(model.eval(), itertools.islice(scenes, 20), spec)
    assert ref["recall@0.5"] > 0.5  # the shipped weights, not a fresh model
    assert after["instances"] == ref["instances"]
    assert after["recall@0.5"] == pytest.approx(ref["recall@0.5"], abs=0.1)
    assert after["mean_best_iou"] == pytest.approx(ref["mean_best_iou"], abs=0.05)


def _worker_trainer(workers: int, out_dir=None, copy_paste: float = 0.5):
    torch.manual_seed(0)
    model = create_model("test_solov2", num_classes=3, thing_classes=list(THING_CLASSES))
    cfg = InstanceTrainConfig(size=ImageShape(48, 64), epochs=2, steps_per_epoch=3, batch_size=2, warmup_steps=1,
                              copy_paste=copy_paste, workers=workers)
    return InstanceTrainer(model, cfg, out_dir=out_dir, model_name="test_solov2")


def test_worker_processes_make_the_batches_the_training_process_makes(tmp_path):
    """Batches from worker processes (augmentation, copy-paste across the batch, SOLO targets made ahead
    of the forward pass at the predicted mask size) equal the ones made in the process: the same losses
    step by step and the same weights, and resume works across the two."""
    torch.set_num_threads(1)
    data = lambda start: synthetic_instances(ImageShape(48, 64), seed=3, start=start, scenes=4)  # noqa: E731
    plain, pooled = _worker_trainer(0), _worker_trainer(2)
    plain.fit(data)
    pooled.fit(data)
    assert [h.loss for h in pooled.history] == pytest.approx([h.loss for h in plain.history], rel=1e-6)
    assert [h.mask for h in pooled.history] == pytest.approx([h.mask for h in plain.history], rel=1e-6)
    for k, v in plain.model.state_dict().items():
        assert torch.allclose(v.float(), pooled.model.state_dict()[k].float(), atol=1e-6), k
    first = _worker_trainer(2, tmp_path)
    first.fit(data, epochs=1)
    resumed = _worker_trainer(0, tmp_path)  # workers are a machine choice: the resumed run makes its own
    resumed.fit(data, resume=tmp_path)
    assert resumed.history[1].loss == pytest.approx(plain.history[1].loss, rel=1e-6)


def test_made_targets_have_the_models_mask_size():
    from edgeseg.train.instance import BatchMaker

    size = ImageShape(48, 64)
    trainer = _worker_trainer(0)
    frames = list(itertools.islice(synthetic_instances(size, seed=0, scenes=2), 2))
    for h, w in ((48, 64), (50, 66), (45, 61)):
        x = torch.zeros(1, 3, h, w)
        trainer.model.train()
        got = tuple(trainer.model(x)["mask_features"].shape[-2:])
        assert trainer.maker.mask_size(h, w) == got, (h, w)
    x, targets = trainer.maker.batch(lambda start: iter(frames[start % 2:] + frames), 0)
    assert x.shape == (2, 3, 48, 64) and all(t.masks.dtype == torch.uint8 for t in targets)
    assert all(t.masks.shape[-2:] == (12, 16) for t in targets if len(t.positive))
    assert isinstance(trainer.maker, BatchMaker)


def test_mismatched_worker_targets_are_an_error_naming_the_fix(monkeypatch):
    from edgeseg.errors import InputError
    from edgeseg.train.instance import BatchMaker

    monkeypatch.setattr(BatchMaker, "mask_size", lambda self, h, w: (h // 4 + 1, w // 4))
    data = lambda start: synthetic_instances(ImageShape(48, 64), seed=3, start=start, scenes=4)  # noqa: E731
    with pytest.raises(InputError, match="mask features are \\[12, 16\\].*targets \\[13, 16\\]") as e:
        _worker_trainer(1, copy_paste=0.0).fit(data)
    assert "--workers 0" in e.value.fix


@pytest.mark.parametrize("kw, match", [({"device": "tpu"}, "--device .tpu. is not a training device"),
                                       ({"workers": -1}, "workers must be >= 0")])
def test_bad_device_or_workers_are_refused(kw, match):
    from edgeseg.errors import InputError

    with pytest.raises(InputError, match=match):
        InstanceTrainConfig(size=ImageShape(48, 64), **kw)


@pytest.mark.skipif(torch.cuda.is_available(), reason="checks the error on a machine without a GPU")
def test_cuda_without_a_gpu_is_a_clear_error():
    from edgeseg.errors import InputError

    model = create_model("test_solov2", num_classes=3, thing_classes=list(THING_CLASSES))
    with pytest.raises(InputError, match="finds no CUDA GPU"):
        InstanceTrainer(model, InstanceTrainConfig(size=ImageShape(48, 64), device="cuda"))


def test_workers_start_after_the_parent_ran_opencvs_thread_pool(monkeypatch):
    """``--init`` re-estimates BatchNorms on full-size crops in the training process, which starts
    OpenCV's thread pool before the workers fork; a worker that then set OpenCV's thread count waited
    forever for the parent's threads (seen in session 30). The loader's timeout turns any such hang into
    an error rather than a silent stall."""
    import cv2

    import edgeseg.train.step_batches as step_batches

    monkeypatch.setattr(step_batches, "WORKER_TIMEOUT_S", 60.0)
    cv2.setNumThreads(2)
    big = np.random.default_rng(0).integers(0, 255, (1200, 1600, 3), np.uint8)
    for _ in range(3):
        cv2.resize(big, (800, 600), interpolation=cv2.INTER_LINEAR)  # large enough for OpenCV's parallel_for
    data = lambda start: synthetic_instances(ImageShape(48, 64), seed=3, start=start, scenes=4)  # noqa: E731
    trainer = _worker_trainer(1, copy_paste=0.0)
    history = trainer.fit(data, epochs=1)
    assert len(history) == 1 and np.isfinite(history[0].loss)
