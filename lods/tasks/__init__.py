"""Tasks: which prompts, cameras and task losses a run uses."""

from lods.tasks.image_editing import ImageEditing
from lods.tasks.image_to_3d import ImageTo3D
from lods.tasks.text_to_3d import TextTo3D
from lods.tasks.text_to_image import TextToImage

__all__ = ["ImageEditing", "ImageTo3D", "TextTo3D", "TextToImage"]
