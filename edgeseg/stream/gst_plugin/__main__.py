"""``python -m edgeseg.stream.gst_plugin [--plugin-path | --python-path]``: the environment the element needs."""
import os
import sys

from . import environment

env = environment()
if "--plugin-path" in sys.argv:
    print(env["GST_PLUGIN_PATH"])
elif "--python-path" in sys.argv:
    print(env["PYTHONPATH"])
else:
    print(f"export GST_PLUGIN_PATH={env['GST_PLUGIN_PATH']}")
    print(f"export PYTHONPATH={env['PYTHONPATH']}")
    print(f"export LD_PRELOAD='{env['LD_PRELOAD']}'   # GCC's C++ unwinder before GStreamer's libunwind")
    print(f"# the plugin loader's libpython must be CPython {env['PYTHON_VERSION_NEEDED']} (Debian 12: 3.11.2)")
    if env["PATH"] != os.environ.get("PATH", ""):
        print("# a virtual environment is active: run gst-launch-1.0 after 'deactivate', or as")
        print(f"#   env PATH={env['PATH']} gst-launch-1.0 ...")
