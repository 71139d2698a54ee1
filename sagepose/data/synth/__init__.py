"""Built-in synthetic human keypoint dataset: procedurally rendered articulated people in COCO format.

``render_image`` draws one annotated image from a generator; ``generate_dataset`` writes
a split (JPEGs + COCO json). Styles (:data:`STYLES`) are the domain knob.
"""

from sagepose.data.synth.scene import render_image
from sagepose.data.synth.styles import STYLES, SynthStyle, get_style
from sagepose.data.synth.writer import generate_dataset

__all__ = ["STYLES", "SynthStyle", "generate_dataset", "get_style", "render_image"]
