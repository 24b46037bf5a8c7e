"""Tasks: which prompts, cameras and task losses a run uses."""

from lods.tasks.image_editing import ImageEditing
from lods.tasks.text_to_image import TextToImage

__all__ = ["ImageEditing", "TextToImage"]
