"""Bundles edited by hand (an audit of bundles as users keep them): each edit is refused naming manifest.json (or the
report) and what to write, or read as meant; before, several raised tracebacks later (an overlay, a backend choice)
or said something else ("truncated", "takes 3 positional arguments")."""
from __future__ import annotations

import json

import numpy as np
import pytest

from edgeseg.bundle import Bundle, sha256_file
from edgeseg.errors import BundleError
from edgeseg.structures import ImageShape, InputSpec
from handmade_bundles import conv_bundle


@pytest.fixture()
def bundle(tmp_path):
    return conv_bundle(tmp_path, input_spec=InputSpec(size=ImageShape(8, 12)))


def _edit(bundle, change) -> None:
    path = bundle.root / "manifest.json"
    data = json.loads(path.read_text())
    change(data)
    path.write_text(json.dumps(data))


@pytest.mark.parametrize("change,words,fix", [
    (lambda d: d.update(palette=[[1, 2], [3, 4, 5], [6, 7, 8], [9, 9, 9]]), "'palette' must be a list of [R, G, B]",
     "remove 'palette'"),
    (lambda d: d.update(palette=[[300, -5, 0]] * 4), "integers 0..255", "remove 'palette'"),
    (lambda d: d.update(schema_version="1"), "schema_version is the string '1'; it must be the number 1",
     '"schema_version": 1'),
    (lambda d: d["input"].update(size="12x8"), "input size must be", None),
    (lambda d: d["input"].update(mean="0.5"), "input mean must be a list of numbers", None),
    (lambda d: d["models"][0].update(precision="int4"), "has unknown precision 'int4'", "upgrade edgeseg"),
    # session 50's fuzzing: each read, and every prediction the same nonsense or of unnamed classes
    (lambda d: d["input"]["mean"].__setitem__(2, float("nan")), "must be finite numbers", "mean 0.485"),
    (lambda d: d["input"].update(scale=float("nan")), "input scale must be a finite number > 0", "1/255"),
    (lambda d: d["input"].update(scale=0), "input scale must be a finite number > 0", None),
    (lambda d: d["input"]["size"].update(height=float("nan")), "input size must be whole numbers of pixels", '"height"'),
    (lambda d: d["input"]["size"].update(height=[8]), "input size must be whole numbers of pixels", None),
    (lambda d: d["outputs"][0].update(shape=[1, True, -4, None]), "shape must list sizes", '"shape": ["batch"'),
])
def test_a_hand_edit_is_refused_naming_the_manifest(bundle, change, words, fix):
    _edit(bundle, change)
    with pytest.raises(BundleError) as e:
        Bundle.open(bundle.root)
    assert "manifest.json" in str(e.value) and words in str(e.value)
    if fix:
        assert fix in (e.value.fix or "")


def test_a_manifest_saved_with_a_bom_is_read(bundle):
    path = bundle.root / "manifest.json"
    path.write_bytes(b"\xef\xbb\xbf" + path.read_bytes())  # Notepad's "UTF-8 with BOM"
    assert Bundle.open(bundle.root).manifest == bundle.manifest


def test_a_report_section_that_is_no_object_reads_as_absent(bundle, caplog):
    report = bundle.root / "report.json"
    data = json.loads(report.read_text()) if report.is_file() else {}
    data["int8"] = [1, 2]
    report.write_text(json.dumps(data))
    _edit(bundle, lambda d: d["files"].update({"report.json": sha256_file(report)}))
    opened = Bundle.open(bundle.root)
    with caplog.at_level("WARNING", logger="edgeseg"):
        assert "int8" not in opened.report
    assert "section(s) int8 is no JSON object" in caplog.text
    import edgeseg

    # the backend choice reads the int8 section: it ran (before: AttributeError: 'list' object has no attribute 'get')
    labels = edgeseg.load(str(bundle.root), backend="auto")(np.zeros((8, 12, 3), np.uint8)).labels
    assert labels.shape == (8, 12)


def test_fields_this_edgeseg_does_not_know_survive_a_rewrite(bundle):
    """A newer edgeseg's field, or a user's own (a signature), was dropped when quantize rewrote the manifest."""
    _edit(bundle, lambda d: d.update(signature={"by": "ci", "sig": "abc"}))
    opened = Bundle.open(bundle.root)
    with opened.editing() as e:
        e.write_json("notes.json", {"n": 1})
    data = json.loads((bundle.root / "manifest.json").read_text())
    assert data["signature"] == {"by": "ci", "sig": "abc"} and "notes.json" in data["files"]


def test_a_zip_of_two_bundles_or_of_none_is_named(bundle, tmp_path, monkeypatch):
    import shutil
    import zipfile

    monkeypatch.setenv("EDGESEG_CACHE_DIR", str(tmp_path / "cache"))
    other = tmp_path / "other.edgeseg"
    shutil.copytree(bundle.root, other)
    two = tmp_path / "two.zip"
    with zipfile.ZipFile(two, "w") as z:
        for root in (bundle.root, other):
            for f in root.iterdir():
                z.write(f, f"{root.name}/{f.name}")
    with pytest.raises(BundleError, match=r"two.zip: holds 2 bundles \(.*other.edgeseg\), not one") as e:
        Bundle.open(two)
    assert "zip -r NAME.zip NAME.edgeseg" in e.value.fix
    none = tmp_path / "none.zip"
    with zipfile.ZipFile(none, "w") as z:
        z.writestr("photos/a.txt", "x")
    with pytest.raises(BundleError, match="none.zip: no manifest.json at its top or in a folder at its top"):
        Bundle.open(none)
    left = [p for p in (tmp_path / "cache").rglob("*") if p.is_dir() and "extract" in p.name]
    assert left == []  # the unpacked files were not left in the cache
    cut = tmp_path / "cut.edgeseg"
    cut.write_bytes(two.read_bytes()[:2000])  # a download cut short, renamed as a bundle
    with pytest.raises(BundleError, match="not a readable .zip .* truncated or corrupt"):
        Bundle.open(cut)


def test_an_edit_of_the_normalisation_or_decoder_is_a_new_backend_choice(bundle):
    """The gates' cached verdicts (INT8 and bf16 label agreement) outlived an edit of mean/std or the decoder."""
    from edgeseg.backends import choice as ch

    request = {"gate": "bf16", "args": []}
    before = ch.cache_key(Bundle.open(bundle.root), ch.device_info(), request)
    _edit(bundle, lambda d: d["input"].update(mean=[0.5, 0.5, 0.5]))
    assert ch.cache_key(Bundle.open(bundle.root), ch.device_info(), request) != before


def test_a_mistyped_bundle_gets_the_close_names_and_an_onnx_file_the_import(tmp_path, monkeypatch):
    import shutil

    from edgeseg.paths import shipped_bundle

    monkeypatch.chdir(tmp_path)
    with pytest.raises(BundleError) as e:
        Bundle.open("raod")
    assert "did you mean road?" in e.value.fix
    shutil.copytree(shipped_bundle("shapes"), tmp_path / "mine.edgeseg")
    with pytest.raises(BundleError) as e:
        Bundle.open(str(tmp_path / "mine.edgesg"))
    assert f"did you mean {tmp_path / 'mine.edgeseg'}?" in e.value.fix
    (tmp_path / "seg.onnx").write_bytes(b"\x08\x07")
    with pytest.raises(BundleError, match="an ONNX model") as e:
        Bundle.open(str(tmp_path / "seg.onnx"))
    assert "edgeseg import" in e.value.fix and "seg.edgeseg" in e.value.fix


def test_a_manifest_is_written_with_the_oldest_schema_that_holds_it(tmp_path):
    """An upgrade audit: an older edgeseg given a bundle using a newer field said "unknown semantic decoder option(s):
    class_bias", its fix inviting the field's removal (which changes the predictions). A manifest using what schema 1
    readers refuse says schema 2, which they refuse as made by a newer edgeseg; the others stay 1, readable by them."""
    from edgeseg.bundle import SCHEMA_VERSION
    from edgeseg.structures.manifest_schema import manifest_schema

    plain = conv_bundle(tmp_path / "plain", input_spec=InputSpec(size=ImageShape(8, 12)))
    assert json.loads((plain.root / "manifest.json").read_text())["schema_version"] == 1
    anchored = conv_bundle(tmp_path / "anchored", input_spec=InputSpec(size=ImageShape(8, 12), resize="letterbox",
                                                                       anchor="top-left"))
    assert json.loads((anchored.root / "manifest.json").read_text())["schema_version"] == 2 == SCHEMA_VERSION
    assert Bundle.open(anchored.root).manifest.input.anchor == "top-left"
    assert manifest_schema("semantic", {"size_rule": "fit"}, {}) == 2
    assert manifest_schema("semantic", {"size_rule": "fixed", "pad_value": 114}, {"upsample": "labels"}) == 1
    # the review: options added after schema-1 readers, which they refuse as unknown (an allowlist, not a list of them)
    for task, decoder in (("semantic", {"scores": "probabilities"}), ("panoptic", {"class_score_thresholds": {}}),
                          ("panoptic", {"layout": "query"}), ("instance", {"prototype_format": "end2end"})):
        assert manifest_schema(task, {}, decoder) == 2, decoder
    assert manifest_schema("semantic", {"pad_value": [114, 114, 114]}, {}) == 2  # per-channel padding came later
    assert manifest_schema("vos", {}, {"anything": 1}) == 1  # no decoder options: readers ignore them
    fused = {"branches": {"semantic": {"task": "semantic", "decoder": {"class_bias": [0.0, 1.0]}}}}  # a branch's own
    assert manifest_schema("panoptic", {}, fused) == 2
    assert manifest_schema("panoptic", {}, {"branches": {"semantic": {"task": "semantic", "decoder": {}}}}) == 1


@pytest.mark.parametrize("made,newer", [("9.1.0", True), (None, True), ("0.1.0", False)])
def test_what_this_edgeseg_does_not_read_is_said_to_need_a_newer_one_when_it_may(bundle, made, newer):
    """The same audit: this edgeseg refused a later release's fields the same way. An unknown schema, decoder option or
    input field names the release that made the bundle (provenance) and the upgrade, unless an older one made it."""
    import edgeseg

    def change(d):
        d["decoder"]["new_option"] = 1
        d["provenance"]["edgeseg_version"] = made
        if made is None:
            del d["provenance"]["edgeseg_version"]

    _edit(bundle, change)
    with pytest.raises(BundleError, match="unknown semantic decoder option") as e:
        Bundle.open(bundle.root)
    upgrade = f"upgrade edgeseg (pip install -U edgeseg; this is {edgeseg.__version__})"
    assert (upgrade in e.value.fix) == newer and (f"made by edgeseg {made}" in e.value.fix) == (made is not None and newer)
    assert ("its manifest does not say which" in e.value.fix) == (made is None)
    _edit(bundle, lambda d: (d["decoder"].pop("new_option"), d["decoder"].update(confidense=True)))
    with pytest.raises(BundleError, match="did you mean confidence") as e:  # a typo, unless a newer release made it
        Bundle.open(bundle.root)  # (the second review: a later option spelled like a known one is no typo)
    assert ("upgrade" in e.value.fix) == (made == "9.1.0") and "the semantic decoder takes" in e.value.fix
    _edit(bundle, lambda d: (d["decoder"].pop("confidense"), d["input"].update(size_rule="crop")))
    with pytest.raises(BundleError, match="size rule must be") as e:  # a newer value, not a newer field
        Bundle.open(bundle.root)
    assert ("upgrade" in (e.value.fix or "")) == (made == "9.1.0")
    _edit(bundle, lambda d: (d["input"].update(size_rule="fixed"), d["decoder"].update(confidense=True)))
    _edit(bundle, lambda d: (d["decoder"].pop("confidense"), d["input"].update(new_field=1)))
    with pytest.raises(BundleError, match="unknown input spec field") as e:
        Bundle.open(bundle.root)
    assert (upgrade in (e.value.fix or "")) == newer
    _edit(bundle, lambda d: (d["input"].pop("new_field"), d.update(schema_version=3)))
    with pytest.raises(BundleError, match=f"unknown schema_version 3 \\(this edgeseg {edgeseg.__version__} reads 1 to 2\\)"):
        Bundle.open(bundle.root)
