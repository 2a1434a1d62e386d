"""``python -m edgeseg.stream.gst_plugin`` (the exports the ``edgeseg`` GStreamer element needs) refuses a Python
that GStreamer's Python plugin loader cannot embed (session 58, an audit on Python 3.12/3.13: the exports were printed
all the same, and gst-launch-1.0 then said only "can't find gi.repository.Gst" and "no element edgeseg")."""
from __future__ import annotations

import glob
import os
import subprocess
import sys

import pytest

from edgeseg.stream.gst_plugin import loader_python, version_problem

HERE = f"{sys.version_info.major}.{sys.version_info.minor}"


def test_the_loader_s_python_is_read_from_the_libpython_it_names(tmp_path):
    (tmp_path / "libgstpython.so").write_bytes(b"\x7fELF...\x00libpython3.99.so.1.0\x00/usr/lib/python3.99/config\x00")
    assert loader_python(str(tmp_path)) == (str(tmp_path / "libgstpython.so"), "3.99")
    assert "embeds CPython 3.99, and this is Python " + HERE in version_problem(str(tmp_path))
    assert loader_python(str(tmp_path / "none")) is None and version_problem(str(tmp_path / "none")) is None


@pytest.mark.skipif(not glob.glob("/usr/lib/*/gstreamer-1.0/libgstpython*.so"), reason="no GStreamer Python loader")
def test_this_machine_s_loader_embeds_its_system_python():
    found = loader_python("")
    assert found is not None and found[1] == "{}.{}".format(*subprocess.run(
        ["/usr/bin/python3", "-c", "import sys; print(*sys.version_info[:2])"], capture_output=True, text=True,
        check=True).stdout.split())


def test_a_mismatch_prints_no_exports_and_exits_2(tmp_path):
    (tmp_path / "libgstpython.so").write_bytes(b"\x00libpython3.99.so.1.0\x00")
    r = subprocess.run([sys.executable, "-m", "edgeseg.stream.gst_plugin"], capture_output=True, text=True,
                       env={**os.environ, "GST_PLUGIN_SYSTEM_PATH": str(tmp_path)})
    assert r.returncode == 2 and r.stdout == ""  # eval "$(...)" exports nothing that cannot work
    assert r.stderr.startswith("edgeseg gst_plugin: error: GStreamer's Python plugin loader") and "fix: make the " \
        "virtual environment with python3.99" in r.stderr
