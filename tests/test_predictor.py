"""edgeseg.load(bundle) end to end on hand-built bundles, against numpy references."""
from __future__ import annotations

import numpy as np
import pytest

import edgeseg
from edgeseg.errors import BundleError, InputError
from edgeseg.predictor import Predictor, load
from edgeseg.structures import ImageShape, InputSpec, SemanticResult
from handmade_bundles import conv_bundle, reference_logits

MEAN, STD = np.array([0.485, 0.456, 0.406]), np.array([0.229, 0.224, 0.225])


def _img(h, w, seed=0):
    return np.random.default_rng(seed).integers(0, 256, (h, w, 3), dtype=np.uint8)


@pytest.fixture()
def bundle(tmp_path):
    return conv_bundle(tmp_path, 5, input_spec=InputSpec(size=ImageShape(8, 12)))


def test_semantic_result_matches_numpy(bundle):
    img = _img(8, 12)
    x = ((img / 255.0 - MEAN) / STD).transpose(2, 0, 1)[None].astype(np.float32)
    want = reference_logits(x, 5)[0].argmax(0)
    p = load(bundle, backend="onnxruntime", threads=1)
    r = p(img)
    assert isinstance(r, SemanticResult) and r.labels.shape == (8, 12) and r.labels.dtype == np.uint8
    assert np.array_equal(r.labels, want)
    assert p.classes == ("c0", "c1", "c2", "c3", "c4") and p.palette.shape == (5, 3) and p.manifest.task == "semantic"
    assert p.backend == "onnxruntime" and p.runner.is_active  # a plain call activates and stays active
    p.close()
    assert not p.runner.is_active


def test_result_is_at_the_image_size(bundle):
    with load(bundle, backend="onnxruntime") as p:
        for shape in [(8, 12), (17, 5), (100, 160)]:
            assert p(_img(*shape)).labels.shape == shape


def test_letterbox_bundle(tmp_path):
    spec = InputSpec(size=ImageShape(8, 8), resize="letterbox", pad_value=0, mean=(0, 0, 0), std=(1, 1, 1), scale=1 / 255)
    bundle = conv_bundle(tmp_path, 4, input_spec=spec)
    img = _img(4, 8)  # fits exactly at scale 1, rows 2..5 of the network input
    canvas = np.zeros((8, 8, 3), np.float32)
    canvas[2:6] = img / 255.0
    want = reference_logits(canvas.transpose(2, 0, 1)[None], 4)[0].argmax(0)[2:6]
    with load(bundle, backend="onnxruntime") as p:
        feed, meta = p.preprocess(img)
        assert (meta.pad_top, meta.pad_left, meta.content) == (2, 0, ImageShape(4, 8))
        assert np.array_equal(p(img).labels, want)


def test_nhwc_bgr_uint8_conventions_are_honoured(tmp_path):
    spec = InputSpec(layout="NHWC", color="BGR", dtype="uint8", size=ImageShape(8, 12))
    bundle = conv_bundle(tmp_path, 3, input_spec=spec)
    img = _img(8, 12, seed=4)
    bgr = img[..., ::-1].astype(np.float32).transpose(2, 0, 1)[None]
    with load(bundle, backend="onnxruntime") as p:
        assert np.array_equal(p(img).labels, reference_logits(bgr, 3)[0].argmax(0))


def test_argmax_in_graph_agrees_with_logits(tmp_path):
    spec = InputSpec(size=ImageShape(8, 12))
    logits_b = conv_bundle(tmp_path / "a", 6, input_spec=spec, name="lg")
    logits_b.update(decoder={"upsample": "labels"})  # nearest upsampling, as the labels graph must do
    labels_b = conv_bundle(tmp_path / "b", 6, input_spec=spec, argmax=True, name="lb")
    img = _img(16, 24, seed=2)
    with load(logits_b, backend="onnxruntime") as a, load(labels_b, backend="onnxruntime") as b:
        la, lb = a(img).labels, b(img).labels
    assert la.shape == lb.shape == (16, 24) and np.array_equal(la, lb)


def test_auto_backend_agrees_with_onnxruntime(bundle):
    img = _img(30, 40, seed=3)
    auto = load(bundle)
    with auto, load(bundle, backend="onnxruntime") as ort:
        assert auto.backend in ("onnxruntime", "openvino", "tensorrt")
        assert np.mean(auto(img).labels == ort(img).labels) > 0.999


def test_context_manager_activates_once(bundle):
    p = load(bundle, backend="onnxruntime")
    assert not p.runner.is_active  # lazy
    with p as same:
        assert same is p and p.runner.is_active
        session = p.runner.session
        p(_img(8, 12))
        p(_img(9, 9))
        assert p.runner.session is session
    assert not p.runner.is_active


def test_load_accepts_paths(bundle):
    assert isinstance(load(str(bundle.root), backend="onnxruntime"), Predictor)
    assert isinstance(edgeseg.load(bundle.root, backend="onnxruntime"), Predictor)
    with pytest.raises(BundleError, match="not found"):
        load(bundle.root.parent / "missing.edgeseg")
    with pytest.raises(InputError, match="threads"):
        load(bundle, threads=-1)


@pytest.mark.parametrize("image,match", [
    ("street.png", "got str"),
    (np.zeros((4, 4), np.uint8), "single-channel"),
    (np.zeros((4, 4, 4), np.uint8), r"shape \[4, 4, 4\]"),
    (np.zeros((4, 4, 3), np.float32), "uint8"),
    (np.zeros((0, 4, 3), np.uint8), "empty"),
])
def test_bad_images_are_explained(bundle, image, match):
    p = load(bundle, backend="onnxruntime")
    with pytest.raises(InputError, match=match) as e:
        p(image)
    if isinstance(image, np.ndarray) and image.ndim == 3 and image.shape[2] == 4:
        assert "img[..., :3]" in str(e.value)


def test_a_predictor_closed_while_other_threads_call_it_keeps_answering():
    """close() from one thread while others call the predictor: the calls in flight failed with 'runner ... is not
    active; use it inside with runner:' (the caller has no runner). They run as calls after close() do."""
    import threading

    import edgeseg

    p = edgeseg.load("shapes", backend="onnxruntime", precision="fp32")
    img = np.zeros((60, 80, 3), np.uint8)
    errors, stop = [], threading.Event()

    def call():
        while not stop.is_set():
            try:
                p(img)
            except Exception as e:  # noqa: BLE001 - collected, asserted below
                errors.append(e)

    threads = [threading.Thread(target=call) for _ in range(3)]
    for t in threads:
        t.start()
    for _ in range(30):
        p.close()
    stop.set()
    for t in threads:
        t.join(timeout=30)
    p.close()
    assert errors == []


def test_a_predictor_pickles_as_what_loads_it_again():
    """An API audit: pickle.dumps(predictor) raised `cannot pickle '_thread.RLock' object` (multiprocessing with spawn,
    Ray tasks). Now it travels as its bundle, backend, precision and decoder options, and gives the same results."""
    import pickle

    import edgeseg

    p = edgeseg.load("shapes-instance", backend="onnxruntime", precision="fp32", threads=1).set_options(score_threshold=0.7)
    q = pickle.loads(pickle.dumps(p))
    assert (q.backend, q.runner.precision, q.runner.threads) == ("onnxruntime", "fp32", 1)
    assert q.options.score_threshold == 0.7 and q.manifest.name == p.manifest.name
    img = (np.random.default_rng(0).random((144, 192, 3)) * 255).astype(np.uint8)
    assert p(img) == q(img)
    p.close()
    q.close()


def test_the_end_of_a_with_block_releases_only_its_own_hold(bundle):
    """README: the model stays open while anything holds it (a with-block, a stream, or calls since the last close());
    the end of a block releases only its hold. Before, it closed the session, so a thread looping `with p:` beside
    another's plain calls closed and reopened it at every block."""
    import threading

    p = load(bundle, backend="onnxruntime")
    opened = []
    impl = p.runner._activate_impl

    def counted():
        opened.append(1)
        impl()

    p.runner._activate_impl = counted
    with p:  # a block alone opens and frees the session
        p(_img(8, 12))
    assert not p.runner.is_active and len(opened) == 1
    p(_img(8, 12))  # calls since the last close() keep it ...
    stop = threading.Event()

    def plain_calls():
        while not stop.is_set():
            p(_img(8, 12))

    t = threading.Thread(target=plain_calls)
    t.start()
    try:
        for _ in range(20):  # ... through another thread's with-blocks
            with p:
                p(_img(9, 9))
    finally:
        stop.set()
        t.join(30)
    assert p.runner.is_active and len(opened) == 2  # before: reopened at (nearly) every block
    p.close()
    assert not p.runner.is_active


def test_a_predictor_loaded_with_a_timed_choice_is_freed_by_its_with_block(tmp_path, monkeypatch):
    """edgeseg.load times the candidates and hands the fastest, already open, to the predictor: that opening keeps
    nothing, so `with edgeseg.load(...) as p:` frees the model at its end; a plain call keeps it until close()."""
    import edgeseg
    from edgeseg._timing import LoadProbe

    monkeypatch.setenv("EDGESEG_CACHE_DIR", str(tmp_path / "cache"))
    monkeypatch.setattr(LoadProbe, "contended", lambda self, demand: 0.0)
    with edgeseg.load("shapes", threads=1) as p:
        assert p.choice.how == "measured" and p.runner.is_active  # the timed runner, open
        p(np.zeros((120, 160, 3), np.uint8))
    assert not p.runner.is_active
    q = edgeseg.load("shapes", threads=1)  # cached: opened lazily by its first call, which keeps it
    q(np.zeros((120, 160, 3), np.uint8))
    with q:
        assert q.runner._holders == 1
    assert q.runner.is_active
    q.close()
    assert not q.runner.is_active


def test_a_with_block_whose_workers_call_the_predictor_frees_it_at_its_end(bundle):
    """The review: calls from a pool of workers inside a with-block kept the session past the block (they were outside
    their own threads' blocks); and a block left in another thread than it was entered raised before releasing its
    hold, which nothing could free then."""
    import threading
    from concurrent.futures import ThreadPoolExecutor

    p = load(bundle, backend="onnxruntime")
    with p:
        with ThreadPoolExecutor(2) as pool:
            assert len(list(pool.map(p, [_img(8, 12)] * 4))) == 4
    assert not p.runner.is_active
    p.__enter__()
    t = threading.Thread(target=p.__exit__, args=(None, None, None))
    t.start()
    t.join(10)
    assert not p.runner.is_active and p.runner._holders == 0
