"""The semantic segmentation model family (PyTorch).

::

    from edgeseg.models import create_model, list_models
    model = create_model("deeplabv3plus_mobilenetv3_large", num_classes=11)
    out = model(images)            # {"logits": float32 [N, 11, H, W]}

Importing this package imports torch; ``import edgeseg`` does not import it.
"""
from .base import SemanticModel, check_runs_at
from .checkpoint import CheckpointMeta, load_checkpoint, read_checkpoint_meta, save_checkpoint
from .encoders import ENCODERS, Encoder, create_encoder, list_encoders
from .registry import MODELS, ModelInfo, create_model, list_models, model_info, register_model
from . import solov2  # noqa: F401,E402  (registers the SOLOv2 instance models)
from . import mask_rcnn  # noqa: F401,E402  (registers the Mask R-CNN instance models)
from . import panoptic_deeplab  # noqa: F401,E402  (registers the Panoptic-DeepLab panoptic models)
from . import lpsnet  # noqa: F401,E402  (registers the LPSNet panoptic models)

__all__ = [
    "SemanticModel", "check_runs_at", "Encoder", "ENCODERS", "MODELS", "ModelInfo", "create_encoder", "list_encoders",
    "create_model", "list_models", "model_info", "register_model",
    "CheckpointMeta", "save_checkpoint", "load_checkpoint", "read_checkpoint_meta",
]
