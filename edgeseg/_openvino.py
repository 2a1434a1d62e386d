"""OpenVINO and NNCF imported without their usage telemetry, unless the user chose it.

``import openvino`` (its model converter, ``openvino.tools.ovc``) and ``import nncf`` each start Intel's
``openvino_telemetry`` with ``enable_opt_in_dialog=False``: where the user never ran ``opt_in_out`` (no consent
file), that counts as consent, and every process that picks the OpenVINO backend (``edgeseg run`` times it on most
CPUs) sent a usage event to Google Analytics from a background thread and wrote under ``~/intel`` (an audit,
session 50: a non-daemon ``ThreadPoolExecutor`` thread left in every Python program that loaded a bundle). An edge
device must not reach out unasked, so :func:`decline_telemetry`, called before edgeseg imports either, makes "no
consent file" read as declined for this process. A choice the user made stands: ``opt_in_out --opt_in`` (the consent
file says 1) or ``EDGESEG_OPENVINO_TELEMETRY=1`` leaves the telemetry as Intel ships it.

Standard library only; nothing is imported when the telemetry package is absent.
"""
from __future__ import annotations

import os

ENV = "EDGESEG_OPENVINO_TELEMETRY"


def decline_telemetry() -> bool:
    """Make a missing consent file read as declined (idempotent); whether the check is now edgeseg's."""
    if os.environ.get(ENV, "").strip().lower() in ("1", "true", "yes", "on"):
        return False
    try:
        from openvino_telemetry.utils import opt_in_checker
    except Exception:  # noqa: BLE001 - not installed, or another layout: nothing to decline
        return False
    checker = getattr(opt_in_checker, "OptInChecker", None)
    result = getattr(opt_in_checker, "ConsentCheckResult", None)
    check = getattr(checker, "check", None)
    if check is None or result is None or not hasattr(result, "NO_FILE") or not hasattr(result, "DECLINED"):
        return False
    if getattr(check, "_edgeseg", False):
        return True

    def declined_without_consent(self, *args, **kwargs):
        answer = check(self, *args, **kwargs)
        return result.DECLINED if answer == result.NO_FILE else answer

    declined_without_consent._edgeseg = True  # type: ignore[attr-defined]
    checker.check = declined_without_consent
    return True
