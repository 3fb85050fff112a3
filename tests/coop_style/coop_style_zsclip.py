"""A zero-shot CLIP trainer in the CoOp-family style (hand-written prompt per dataset, no training).

Run it with `--eval-only`, as CoOp's zero-shot script does.
"""
import torch

from dassl.engine import TRAINER_REGISTRY, TrainerX

from clip import clip

from .coop_style_coop import load_clip_to_cpu

CUSTOM_TEMPLATES = {
    "MiniDTD": "{} texture.",
    "DescribableTextures": "{} texture.",
    "EuroSAT": "a centered satellite photo of {}.",
}


@TRAINER_REGISTRY.register()
class ZSStyleTest(TrainerX):
    def build_model(self):
        cfg = self.cfg
        classnames = self.dm.dataset.classnames

        print(f"Loading CLIP (backbone: {cfg.MODEL.BACKBONE.NAME})")
        clip_model = load_clip_to_cpu(cfg)
        if self.device.type == "cpu":
            clip_model.float()  # OpenAI's weights are fp16; keep CPU runs in fp32
        clip_model.to(self.device)

        template = CUSTOM_TEMPLATES.get(cfg.DATASET.NAME, "a photo of a {}.")
        prompts = [template.format(c.replace("_", " ")) for c in classnames]
        print(f"Prompts: {prompts}")
        prompts = torch.cat([clip.tokenize(p) for p in prompts]).to(self.device)

        with torch.no_grad():
            text_features = clip_model.encode_text(prompts)
            text_features = text_features / text_features.norm(dim=-1, keepdim=True)

        self.text_features = text_features
        self.clip_model = clip_model

    def model_inference(self, image):
        image_features = self.clip_model.encode_image(image)
        image_features = image_features / image_features.norm(dim=-1, keepdim=True)
        logit_scale = self.clip_model.logit_scale.exp()
        return logit_scale * image_features @ self.text_features.t()
