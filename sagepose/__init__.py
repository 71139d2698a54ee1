"""sagepose: pure-PyTorch top-down 2D human pose estimation.

``sagepose.load(name_or_config, checkpoint=None, device="cpu")`` gives a model whose
``.predict(image, bboxes)`` returns keypoints (N, K, 2) in image pixels and scores (N, K).
"""
from sagepose.version import __version__

__all__ = ["__version__", "load"]


def __getattr__(name):
    # deferred so that `import sagepose` (and `sagepose --help`) does not pull in torch
    if name == "load":
        from sagepose.api import load

        return load
    raise AttributeError(f"module 'sagepose' has no attribute {name!r}")
