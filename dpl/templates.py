"""Text templates (data, transcribed as facts from the public repositories named below).

- ``DEFAULT_TEMPLATE``: DPL's default text input and search-stage input.
- ``DPL_CUSTOM_TEMPLATES``: the DPL authors' per-dataset ``custom`` text inputs
  (Differentiable-Prompt-Learn ``trainers/imagenet_templates.py``, CUSTOM_TEMPLATES).
- ``ZEROSHOT_TEMPLATES``: CoOp's ZeroshotCLIP per-dataset templates (CoOp ``trainers/zsclip.py``);
  they differ from the DPL ones (e.g. OxfordPets "a photo of a {}, a type of pet.").
- ``IMAGENET_TEMPLATES``: the 60 ImageNet templates of the DPL authors, "a photo of a {}." first and
  "itap of the {}." last; used by the ``ensemble`` text input and the KD teacher.
- ``IMAGENET_TEMPLATES_SELECT``: CoOp's 7-template selection (ZeroshotCLIP2).

Keys are the CoOp dataset registry names (``DATASET.NAME``).
"""
from __future__ import annotations

from dpl.errors import UserError

DEFAULT_TEMPLATE = "a photo of a {}."

# The offline demo's tasks (demo/world.py): the caption form the demo CLIP was pretrained on, for
# both the DPL and the zero-shot templates.
DEMO_TEMPLATES = {name: DEFAULT_TEMPLATE for name in (
    "DemoShapes", "DemoCombos", "DemoColors", "DemoSizeShapes", "DemoTextures",
    "DemoCombosSketch", "DemoCombosClutter", "DemoCombosJitter")}

DPL_CUSTOM_TEMPLATES = {
    "OxfordPets": "a type of pet, a photo of a {}.",
    "OxfordFlowers": "a type of flower, a photo of a {}.",
    "FGVCAircraft": "a type of aircraft, a photo of a {}.",
    "DescribableTextures": "a texture of {}.",
    "EuroSAT": "a centered satellite photo of {}.",
    "StanfordCars": "a photo of a {}.",
    "Food101": "a type of food, a photo of {}.",
    "SUN397": "a photo of a {}.",
    "Caltech101": "a photo of a {}.",
    "UCF101": "a photo of a person doing {}.",
    "ImageNet": "a photo of a {}.",
    "ImageNetSketch": "a photo of a {}.",
    "ImageNetV2": "a photo of a {}.",
    "ImageNetA": "a photo of a {}.",
    "ImageNetR": "a photo of a {}.",
    **DEMO_TEMPLATES,
}

ZEROSHOT_TEMPLATES = {
    "OxfordPets": "a photo of a {}, a type of pet.",
    "OxfordFlowers": "a photo of a {}, a type of flower.",
    "FGVCAircraft": "a photo of a {}, a type of aircraft.",
    "DescribableTextures": "{} texture.",
    "EuroSAT": "a centered satellite photo of {}.",
    "StanfordCars": "a photo of a {}.",
    "Food101": "a photo of {}, a type of food.",
    "SUN397": "a photo of a {}.",
    "Caltech101": "a photo of a {}.",
    "UCF101": "a photo of a person doing {}.",
    "ImageNet": "a photo of a {}.",
    "ImageNetSketch": "a photo of a {}.",
    "ImageNetV2": "a photo of a {}.",
    "ImageNetA": "a photo of a {}.",
    "ImageNetR": "a photo of a {}.",
    **DEMO_TEMPLATES,
}

IMAGENET_TEMPLATES = [
    "a photo of a {}.",
    "a bad photo of a {}.",
    "a photo of many {}.",
    "a sculpture of a {}.",
    "a photo of the hard to see {}.",
    "a low resolution photo of the {}.",
    "a rendering of a {}.",
    "graffiti of a {}.",
    "a bad photo of the {}.",
    "a cropped photo of the {}.",
    "a tattoo of a {}.",
    "the embroidered {}.",
    "a photo of a hard to see {}.",
    "a bright photo of a {}.",
    "a photo of a clean {}.",
    "a photo of a dirty {}.",
    "a dark photo of the {}.",
    "a drawing of a {}.",
    "a photo of my {}.",
    "the plastic {}.",
    "a photo of the cool {}.",
    "a close-up photo of a {}.",
    "a black and white photo of the {}.",
    "a painting of the {}.",
    "a painting of a {}.",
    "a pixelated photo of the {}.",
    "a sculpture of the {}.",
    "a bright photo of the {}.",
    "a cropped photo of a {}.",
    "a plastic {}.",
    "a photo of the dirty {}.",
    "a jpeg corrupted photo of a {}.",
    "a blurry photo of the {}.",
    "a photo of the {}.",
    "a good photo of the {}.",
    "a rendering of the {}.",
    "a {} in a video game.",
    "a photo of one {}.",
    "a doodle of a {}.",
    "a close-up photo of the {}.",
    "the origami {}.",
    "the {} in a video game.",
    "a sketch of a {}.",
    "a doodle of the {}.",
    "a origami {}.",
    "a low resolution photo of a {}.",
    "the toy {}.",
    "a rendition of the {}.",
    "a photo of the clean {}.",
    "a photo of a large {}.",
    "a rendition of a {}.",
    "a photo of a nice {}.",
    "a photo of a weird {}.",
    "a blurry photo of a {}.",
    "a cartoon {}.",
    "art of a {}.",
    "a sketch of the {}.",
    "a embroidered {}.",
    "a pixelated photo of a {}.",
    "itap of the {}.",
]

IMAGENET_TEMPLATES_SELECT = [
    "itap of a {}.",
    "a bad photo of the {}.",
    "a origami {}.",
    "a photo of the large {}.",
    "a {} in a video game.",
    "art of the {}.",
    "a photo of the small {}.",
]


def dataset_template(dataset_name: str, table: dict = DPL_CUSTOM_TEMPLATES) -> str:
    """The per-dataset template of ``table``; a clear error for an unknown ``DATASET.NAME``."""
    try:
        return table[dataset_name]
    except KeyError:
        raise UserError(
            f"No per-dataset template for DATASET.NAME={dataset_name!r}; known datasets: "
            f"{', '.join(sorted(table))}. Use TRAINER.DPL.TEXT_INPUT default (or ensemble) for "
            "other datasets.") from None
