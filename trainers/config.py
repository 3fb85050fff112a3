"""Config keys of our trainers, added to Dassl's defaults by ``train.py`` (``extend_cfg``).

Key names follow CoOp/MaPLe where those trainers exist (COOP, COCOOP, IVLP, MAPLE) so that their YAML
files and scripts work unchanged; DPL's own keys live under ``TRAINER.DPL``.
"""
from yacs.config import CfgNode as CN


# Keys (or whole nodes) a trainer never reads; train.py warns once when one is set away from its
# default, since the user probably meant the other stage.
IGNORED_KEYS = {
    "DPLSearch": ("TRAINER.DPL.CONFIG_FILE", "TRAINER.DPL.TEXT_INPUT", "TRAINER.DPL.KD_WEIGHT",
                  "TRAINER.DPL.KD_TEMPERATURE", "TRAINER.DPL.INIT_STD", "TRAINER.DPL.MANUAL"),
    "DPLTrain": ("TRAINER.DPL.SEARCH",),
}


def extend_cfg(cfg):
    """Add every key our trainers and datasets read. Call right after ``get_cfg_default()``."""
    cfg.MODEL.BACKBONE.PATH = ""  # local checkpoint (OpenAI or open_clip format); "" = ~/.cache/clip/<usual name>
    # open_clip model-config JSON for architectures open_clip does not list, or "openai" for an
    # OpenAI-format file under a NAME of one's own (dpl/clip_loader.py: how a NAME reads a file)
    cfg.MODEL.BACKBONE.CONFIG = ""

    cfg.DATASET.SUBSAMPLE_CLASSES = "all"  # all / base / new (CoOp base-to-new protocol)
    # Draw the few-shot val split from train (disjoint from the K-shot picks) for loaders whose
    # CoOp val split *is* the test split (ImageNet). The search stage turns this on.
    cfg.DATASET.VAL_FROM_TRAIN = False
    # Your own data (ImageFolder, CSVDataset): the CSV file, and the per-class fractions of train
    # split off as val / test when they are not given (fixed, seed-independent split).
    cfg.DATASET.CSV = ""
    cfg.DATASET.VAL_FRACTION = 0.2
    cfg.DATASET.TEST_FRACTION = 0.2
    # CSVDataset (and ImageFolder, instead of its classnames.txt): a '<label><TAB><class name>' file,
    # relative to DATASET.ROOT or absolute; "" = the labels are the class names.
    cfg.DATASET.CLASSNAMES = ""
    # Where split files this code writes and few-shot caches go: "" = the dataset folder (CoOp's
    # place); else <CACHE_DIR>/<dataset folder name>-<hash of its path>/, so read-only shared
    # datasets work for any shots and seed. A split file in the dataset folder is still read first.
    cfg.DATASET.CACHE_DIR = ""

    # With TRAIN.CHECKPOINT_FREQ 1 every epoch is saved (so a killed run resumes); keep only the
    # newest N regular checkpoints per model (0 = keep all, as Dassl does).
    cfg.TRAIN.KEEP_CHECKPOINTS = 0

    _add_dpl(cfg)
    _add_baselines(cfg)
    _add_zeroshot(cfg)


def _add_dpl(cfg):
    cfg.TRAINER.DPL = CN()
    cfg.TRAINER.DPL.PREC = "fp32"  # fp32 / fp16 / amp / bf16 (dpl/precision.py)
    cfg.TRAINER.DPL.CONFIG_FILE = ""  # prompt_config.json from DPLSearch, read by DPLTrain
    cfg.TRAINER.DPL.TEXT_INPUT = "default"  # default / custom / ensemble
    cfg.TRAINER.DPL.KD_WEIGHT = 0.0  # 0 = no teacher is built at all
    cfg.TRAINER.DPL.KD_TEMPERATURE = 1.0
    cfg.TRAINER.DPL.INIT_STD = 0.02  # fresh train-stage prompts ~ N(0, std^2)

    # A manual configuration for DPLTrain when CONFIG_FILE is empty (baselines without search):
    # explicit per-block lists win; otherwise LENGTH tokens in the first DEPTH blocks (-1 = all).
    cfg.TRAINER.DPL.MANUAL = CN()
    cfg.TRAINER.DPL.MANUAL.TEXT_LENGTHS = []
    cfg.TRAINER.DPL.MANUAL.VISION_LENGTHS = []
    cfg.TRAINER.DPL.MANUAL.TEXT_LENGTH = 0
    cfg.TRAINER.DPL.MANUAL.TEXT_DEPTH = -1
    cfg.TRAINER.DPL.MANUAL.VISION_LENGTH = 0
    cfg.TRAINER.DPL.MANUAL.VISION_DEPTH = -1

    s = cfg.TRAINER.DPL.SEARCH = CN()
    s.TEXT_OPTIONS = [0, 2, 4, 6]  # context lengths per block; sorted, starting with 0
    s.VISION_OPTIONS = [0, 2, 4, 6]
    s.ALPHA_LR = 3.5e-3  # Adam on alpha (docs/METHOD.md, "The search loop")
    s.ALPHA_BETAS = (0.5, 0.999)
    s.ALPHA_WEIGHT_DECAY = 0.0
    s.ALPHA_INIT_STD = 1e-3
    s.PROMPT_INIT = "official"  # official (image N(0,1), text U[0,1)) / normal
    s.PROMPT_INIT_STD = 0.02  # used by PROMPT_INIT normal
    s.DOMINANCE_THRESHOLD = 0.5  # a block is single-dominant when its top softmax weight >= this
    # The search loop. Defaults: the paper's Algorithm 1 (an alpha step at every prompt step, all
    # OPTIM.MAX_EPOCH epochs, no early stop). configs/trainers/DPLSearch/vit_b16_fast.yaml holds a
    # faster loop (ALPHA_EVERY 4, PATIENCE 3, MIN_EPOCHS 40) that is not the paper's.
    s.ALPHA_EVERY = 1  # an alpha step every k prompt steps (1 = every step, Algorithm 1)
    s.PATIENCE = 0  # early stop when the derived configuration is unchanged this many epochs; 0 = off
    s.MIN_EPOCHS = 0  # early stop never ends the search before this many epochs
    s.CLASS_SAMPLE = 0  # approximate, opt-in: score the batch's classes + random others, N in all
    s.UPDATE_MODE = "alternate"  # alternate (Algorithm 1) / simultaneous (one shared text pass)
    s.IMPL = "fused"  # fused / reference (one attention per option; for tests and benchmarks)
    # The fused path's real-token attention: scores (explicit scores, every device) / flex (compiled
    # flex_attention, CUDA with torch >= 2.9, opt-in); env DPL_SUPERNET_REAL overrides it.
    s.REAL_ATTENTION = "scores"
    s.VAL_BATCH_SIZE = 16  # alpha-step mini-batch
    s.PLOT = True  # write alpha_heatmap.png / alpha_convergence.png at the end


def _add_baselines(cfg):
    cfg.TRAINER.COOP = CN()
    cfg.TRAINER.COOP.N_CTX = 16
    cfg.TRAINER.COOP.CSC = False
    cfg.TRAINER.COOP.CTX_INIT = ""
    cfg.TRAINER.COOP.PREC = "fp16"
    cfg.TRAINER.COOP.CLASS_TOKEN_POSITION = "end"  # end / middle / front

    cfg.TRAINER.COCOOP = CN()
    cfg.TRAINER.COCOOP.N_CTX = 16
    cfg.TRAINER.COCOOP.CTX_INIT = ""
    cfg.TRAINER.COCOOP.PREC = "fp16"

    cfg.TRAINER.MAPLE = CN()
    cfg.TRAINER.MAPLE.N_CTX = 2
    cfg.TRAINER.MAPLE.CTX_INIT = "a photo of a"
    cfg.TRAINER.MAPLE.PREC = "fp16"
    cfg.TRAINER.MAPLE.PROMPT_DEPTH = 9

    cfg.TRAINER.IVLP = CN()
    cfg.TRAINER.IVLP.N_CTX_VISION = 2
    cfg.TRAINER.IVLP.N_CTX_TEXT = 2
    cfg.TRAINER.IVLP.CTX_INIT = "a photo of a"
    cfg.TRAINER.IVLP.PREC = "fp16"
    cfg.TRAINER.IVLP.PROMPT_DEPTH_VISION = 9
    cfg.TRAINER.IVLP.PROMPT_DEPTH_TEXT = 9


def _add_zeroshot(cfg):
    # ZeroshotCLIP (CoOp) had no keys of its own: it ran CLIP's fp16 weights with CoOp's templates.
    cfg.TRAINER.ZEROSHOTCLIP = CN()
    cfg.TRAINER.ZEROSHOTCLIP.PREC = "fp16"  # fp16 (CUDA) / fp32 / amp / bf16
    cfg.TRAINER.ZEROSHOTCLIP.TEMPLATE = ""  # "" = CoOp's template for DATASET.NAME, e.g. "{} texture."


# Keys of the model's input preprocessing, and the field of ``dpl.clip_loader.preprocess_of``.
MODEL_INPUT_KEYS = {"INPUT.SIZE": "size", "INPUT.PIXEL_MEAN": "mean", "INPUT.PIXEL_STD": "std",
                    "INPUT.INTERPOLATION": "interpolation"}


def apply_model_input(cfg, opts) -> list:
    """Default ``INPUT.SIZE/PIXEL_MEAN/PIXEL_STD/INTERPOLATION`` from an open_clip model's config
    or a Hugging Face folder's ``preprocessor_config.json``.

    The trainer YAMLs hold OpenAI's values; for an open_clip model (an open_clip name or
    ``MODEL.BACKBONE.CONFIG``) or a Hugging Face folder its own values win over them, and a key given in the command-line
    ``opts`` wins over both. OpenAI models keep the YAML values. Returns the keys that were set.
    Call after merging the opts, before ``cfg.freeze()``.
    """
    from dpl.clip_loader import model_preprocess

    pre = model_preprocess(cfg.MODEL.BACKBONE.NAME, cfg.MODEL.BACKBONE.CONFIG,
                           getattr(cfg.MODEL.BACKBONE, "PATH", ""))
    if pre is None:
        return []
    given = set(opts[0::2])
    changed = []
    for key, field in MODEL_INPUT_KEYS.items():
        if key in given:
            continue
        value = pre[field]
        value = tuple(value) if field == "size" else list(value) if field != "interpolation" else value
        setattr(cfg.INPUT, key.split(".")[1], value)
        changed.append(key)
    return changed
