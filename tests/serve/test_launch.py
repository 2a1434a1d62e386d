"""edgeseg.serve.serve's checks before anything starts (no Ray needed)."""
from __future__ import annotations

import pytest

from edgeseg.errors import InputError
from edgeseg.serve import serve
from edgeseg.serve.launch import _names


@pytest.mark.parametrize("kw", [{"replicas": 0}, {"max_batch": 0}, {"port": 0}, {"batch_wait_s": -1}])
def test_bad_settings_fail_before_ray_starts(kw):
    with pytest.raises(InputError):
        serve(["shapes"], **kw)


def test_bundles_are_served_by_manifest_name_and_paths_become_absolute(tmp_path):
    from handmade_bundles import conv_bundle

    b = conv_bundle(tmp_path, name="cam")
    assert _names(["shapes", str(b.root)]) == {"shapes": "shapes", "cam": str(b.root.resolve())}
    with pytest.raises(InputError, match="both named 'shapes'"):
        _names(["shapes", "shapes"])
    with pytest.raises(InputError, match="at least one bundle"):
        _names([])
