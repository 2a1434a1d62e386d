"""Scale-out on Ray Serve (the optional extra ``edgeseg[serve]``).

::

    server = edgeseg.serve.serve(["shapes"], port=8000, replicas=2, max_batch=8)   # HTTP on 127.0.0.1
    p = edgeseg.serve.RemotePredictor(server.url)      # or edgeseg.load("http://127.0.0.1:8000")
    result = p(rgb)                                    # SemanticResult, equal to local inference
    server.shutdown()

Semantic, instance and panoptic bundles: replicas run each through :func:`edgeseg.predictor.load`
(the local runner and decoder), batch frames across clients, and take predict requests straight
from Ray's HTTP proxy (one Ray hop; :mod:`edgeseg.serve.app`). Ray is imported only by :func:`serve`;
the client (:mod:`edgeseg.remote`) needs neither Ray nor this package. Deployment: docs/deployment.md.
"""
from __future__ import annotations

from typing import TYPE_CHECKING

from .._lazy import lazy_module

_LAZY = {
    "serve": ".launch:serve",
    "Server": ".launch:Server",
    "RemotePredictor": "edgeseg.remote:RemotePredictor",
    "infer_batch": ".batching:infer_batch",
}

__all__ = list(_LAZY)

__getattr__, __dir__ = lazy_module(__name__, _LAZY)

if TYPE_CHECKING:  # pragma: no cover
    from ..remote import RemotePredictor
    from .batching import infer_batch
    from .launch import Server, serve
