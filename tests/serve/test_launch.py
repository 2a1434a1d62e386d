"""edgeseg.serve.serve's checks before anything starts (no Ray needed)."""
from __future__ import annotations

import pytest

from edgeseg.errors import InputError
from edgeseg.serve import serve
from edgeseg.serve.launch import _names


@pytest.mark.parametrize("kw", [{"replicas": 0}, {"max_batch": 0}, {"port": 0}, {"batch_wait_s": -1},
                                {"batch_wait_s": float("inf")}, {"batch_wait_s": float("nan")},  # every request hung
                                {"cpus_per_replica": -1}, {"cpus_per_replica": float("nan")},  # Ray's traceback later
                                {"gpus_per_replica": -0.5}])
def test_bad_settings_fail_before_ray_starts(kw):
    import sys

    with pytest.raises(InputError):
        serve(["shapes"], **kw)
    assert "ray" not in sys.modules or not sys.modules["ray"].is_initialized()


@pytest.mark.parametrize("bundle,decoder,words", [
    ("shapes", {"score_threshold": 0.5}, "shapes: score_threshold does not apply to semantic bundles"),
    ("shapes-instance", {"upsample": "labels"}, "shapes-instance: upsample does not apply to instance bundles"),
    ("shapes-instance", {"score_threshold": 1.5}, "score_threshold must be within 0..1, got 1.5"),
    ("shapes", {"upsample": "bogus"}, "upsample must be logits or labels"),
])
def test_decoder_settings_a_bundle_does_not_take_fail_before_ray_starts(bundle, decoder, words):
    """An audit: a remote client cannot change the decoding (the server decodes), and the refusal said to set it on
    the server, which had no option for it: `edgeseg serve --score-threshold / --upsample` now, checked first."""
    import sys

    with pytest.raises(InputError, match=words):
        serve([bundle], decoder=decoder)
    assert "ray" not in sys.modules or not sys.modules["ray"].is_initialized()


def test_bundles_are_served_by_manifest_name_and_paths_become_absolute(tmp_path):
    from handmade_bundles import conv_bundle

    b = conv_bundle(tmp_path, name="cam")
    assert _names(["shapes", str(b.root)]) == {"shapes": "shapes", "cam": str(b.root.resolve())}
    with pytest.raises(InputError, match="both named 'shapes'"):
        _names(["shapes", "shapes"])
    with pytest.raises(InputError, match="at least one bundle"):
        _names([])


def test_every_task_is_served_and_names_must_fit_a_url(tmp_path):
    from handmade_bundles import conv_bundle

    assert _names(["shapes-instance", "shapes-panoptic"]) == {"shapes-instance": "shapes-instance",
                                                              "shapes-panoptic": "shapes-panoptic"}
    b = conv_bundle(tmp_path, name="two words")
    with pytest.raises(InputError, match="'two words' cannot be a URL path segment"):
        _names([str(b.root)])


class _FakeRay:
    def __init__(self, resources):
        self.resources, self.stopped = resources, False

    def cluster_resources(self):
        return self.resources

    def shutdown(self):
        self.stopped = True


def test_replicas_that_cannot_all_be_placed_on_a_local_ray_are_refused():
    from edgeseg.serve.launch import _check_fits

    ok = _FakeRay({"CPU": 2.0})
    _check_fits(ok, 4, 0.5, 0.0)
    assert not ok.stopped
    small = _FakeRay({"CPU": 2.0})
    with pytest.raises(InputError, match="3 replica.*need 3 CPUs; this machine's Ray has 2") as info:
        _check_fits(small, 3, 1.0, 0.0)
    assert small.stopped and "--cpus-per-replica" in info.value.fix
    with pytest.raises(InputError, match="GPU"):
        _check_fits(_FakeRay({"CPU": 8.0}), 1, 1.0, 1.0)


def test_a_ray_this_process_starts_sends_no_usage_stats_unless_chosen(tmp_path, monkeypatch):
    """Ray collects usage stats by default (a report to Anyscale from the head node): a local Ray `edgeseg serve`
    starts declines them unless the user chose (the variable set, or `ray enable-usage-stats`'s config file)."""
    import json
    import os

    from edgeseg.serve.launch import _decline_usage_stats

    monkeypatch.setenv("HOME", str(tmp_path))
    monkeypatch.delenv("RAY_USAGE_STATS_ENABLED", raising=False)
    _decline_usage_stats()
    assert os.environ["RAY_USAGE_STATS_ENABLED"] == "0"
    monkeypatch.setenv("RAY_USAGE_STATS_ENABLED", "1")  # the user's choice stands
    _decline_usage_stats()
    assert os.environ["RAY_USAGE_STATS_ENABLED"] == "1"
    monkeypatch.delenv("RAY_USAGE_STATS_ENABLED")
    (tmp_path / ".ray").mkdir()
    (tmp_path / ".ray" / "config.json").write_text(json.dumps({"usage_stats": True}))
    _decline_usage_stats()
    assert "RAY_USAGE_STATS_ENABLED" not in os.environ
