"""``python -m edgeseg.stream.gst_plugin [--plugin-path | --python-path]``: the environment the element needs."""
import os
import sys

from . import environment, version_problem

env = environment()
problem = version_problem()
if problem is not None:  # nothing on standard output: eval "$(...)" then exports nothing that cannot work
    print(f"edgeseg gst_plugin: error: {problem}", file=sys.stderr)
    sys.exit(2)
if "--plugin-path" in sys.argv:
    print(env["GST_PLUGIN_PATH"])
elif "--python-path" in sys.argv:
    print(env["PYTHONPATH"])
else:
    print(f"export GST_PLUGIN_PATH={env['GST_PLUGIN_PATH']}")
    print(f"export PYTHONPATH={env['PYTHONPATH']}")
    print(f"export LD_PRELOAD='{env['LD_PRELOAD']}'   # GCC's C++ unwinder before GStreamer's libunwind")
    print(f"# the plugin loader's libpython must be CPython {env['PYTHON_VERSION_NEEDED']}, this Python's")
    if env["PATH"] != os.environ.get("PATH", ""):
        # on standard error: under eval "$(...)" a comment in the exports is never seen. With the venv first in PATH
        # the loader's embedded interpreter takes the venv's prefix ("gi.repository.Gst is no dict", no element
        # "edgeseg"), and GStreamer's registry remembers the failed scan for later runs
        print("edgeseg gst_plugin: a virtual environment is active: run gst-launch-1.0 after 'deactivate', or as\n"
              f"  env PATH={env['PATH']} gst-launch-1.0 ...\n"
              "  (a run that already failed with 'no element \"edgeseg\"' left that in GStreamer's registry: "
              "rm ~/.cache/gstreamer-1.0/registry.*.bin)", file=sys.stderr)
