"""dassl compatibility: registries, check_availability, default config tree, yacs behaviour."""
import pytest
import yaml

from dassl.config import clean_cfg, get_cfg_default
from dassl.data.datasets import DATASET_REGISTRY, build_dataset
from dassl.engine import TRAINER_REGISTRY, build_trainer
from dassl.evaluation import EVALUATOR_REGISTRY
from dassl.utils import Registry, check_availability, get_most_similar_str_to_a_from_b, tolist_if_not


# ---------------------------------------------------------------- registries

def test_registry_decorator_direct_and_duplicates():
    reg = Registry("THING")

    @reg.register()
    class Alpha:
        pass

    def beta():
        pass

    assert reg.register(beta) is beta
    assert reg.get("Alpha") is Alpha  # the decorator returns the class unchanged
    assert reg.registered_names() == ["Alpha", "beta"]

    with pytest.raises(KeyError) as err:
        reg.register(beta)
    assert err.value.args[0] == 'An object named "beta" was already registered in "THING" registry'

    def beta_v2():
        pass
    beta_v2.__name__ = "beta"
    reg.register(beta_v2, force=True)
    assert reg.get("beta") is beta_v2

    with pytest.raises(KeyError) as err:
        reg.get("gamma")
    assert err.value.args[0] == 'Object name "gamma" does not exist in "THING" registry'


def test_check_availability_message_suggests_closest():
    with pytest.raises(ValueError) as err:
        check_availability("CoCop", ["CoOp", "CoCoOp", "MaPLe"])
    assert str(err.value) == (
        "The requested one is expected to belong to ['CoOp', 'CoCoOp', 'MaPLe'], "
        "but got [CoCop] (do you mean [CoCoOp]?)"
    )
    check_availability("MaPLe", ["CoOp", "MaPLe"])  # no error
    assert get_most_similar_str_to_a_from_b("dtd", ["DTD", "dt", "xyz"]) == "dt"
    assert tolist_if_not("a") == ["a"] and tolist_if_not(["a"]) == ["a"]


def test_build_trainer_and_dataset_unknown_names():
    cfg = get_cfg_default()
    cfg.TRAINER.NAME = "NoSuchTrainer"
    with pytest.raises(ValueError, match=r"but got \[NoSuchTrainer\] \(do you mean"):
        build_trainer(cfg)
    cfg.DATASET.NAME = "NoSuchDataset"
    with pytest.raises(ValueError, match=r"but got \[NoSuchDataset\]"):
        build_dataset(cfg)
    assert TRAINER_REGISTRY._name == "TRAINER" and DATASET_REGISTRY._name == "DATASET"
    assert EVALUATOR_REGISTRY.registered_names() == ["Classification"]


# ---------------------------------------------------------------- default config

def test_default_values():
    cfg = get_cfg_default()
    assert (cfg.VERSION, cfg.OUTPUT_DIR, cfg.RESUME, cfg.SEED, cfg.USE_CUDA, cfg.VERBOSE) == (
        1, "./output", "", -1, True, True)
    assert cfg.INPUT.SIZE == (224, 224) and cfg.INPUT.INTERPOLATION == "bilinear"
    assert cfg.INPUT.TRANSFORMS == () and cfg.INPUT.RRCROP_SCALE == (0.08, 1.0)
    assert cfg.INPUT.PIXEL_MEAN == [0.485, 0.456, 0.406]
    assert (cfg.DATASET.NUM_SHOTS, cfg.DATASET.ROOT, cfg.DATASET.SOURCE_DOMAINS) == (-1, "", ())
    assert cfg.DATASET.SUBSAMPLE_CLASSES == "all"
    assert cfg.DATALOADER.NUM_WORKERS == 4 and cfg.DATALOADER.K_TRANSFORMS == 1
    assert cfg.DATALOADER.TRAIN_X.SAMPLER == "RandomSampler" and cfg.DATALOADER.TRAIN_X.BATCH_SIZE == 32
    assert cfg.DATALOADER.TEST.SAMPLER == "SequentialSampler" and cfg.DATALOADER.TEST.BATCH_SIZE == 32
    o = cfg.OPTIM
    assert (o.NAME, o.LR, o.WEIGHT_DECAY, o.MOMENTUM, o.SGD_DAMPNING, o.SGD_NESTEROV) == (
        "adam", 0.0003, 5e-4, 0.9, 0, False)
    assert (o.LR_SCHEDULER, o.STEPSIZE, o.GAMMA, o.MAX_EPOCH) == ("single_step", (-1,), 0.1, 10)
    assert (o.WARMUP_EPOCH, o.WARMUP_TYPE, o.WARMUP_CONS_LR, o.WARMUP_MIN_LR, o.WARMUP_RECOUNT) == (
        -1, "linear", 1e-5, 1e-5, True)
    assert (cfg.TRAIN.CHECKPOINT_FREQ, cfg.TRAIN.PRINT_FREQ, cfg.TRAIN.COUNT_ITER) == (0, 10, "train_x")
    t = cfg.TEST
    assert (t.EVALUATOR, t.PER_CLASS_RESULT, t.COMPUTE_CMAT, t.NO_TEST, t.SPLIT, t.FINAL_MODEL) == (
        "Classification", False, False, False, "test", "last_step")
    assert cfg.TRAINER.NAME == "" and cfg.TRAINER.FIXMATCH.CONF_THRE == 0.95
    assert cfg.TRAINER.DDAIG.G_ARCH == "" and cfg.TRAINER.MIXMATCH.RAMPUP == 20000


def test_get_cfg_default_returns_independent_unfrozen_copies():
    a, b = get_cfg_default(), get_cfg_default()
    a.OPTIM.LR = 0.5
    assert b.OPTIM.LR == 0.0003 and not b.is_frozen()


def test_clean_cfg_keeps_name_and_own_node():
    cfg = get_cfg_default()
    clean_cfg(cfg, "fixmatch")
    assert sorted(cfg.TRAINER.keys()) == ["FIXMATCH", "NAME"]


# ---------------------------------------------------------------- yacs behaviour

def _write_yaml(path, text):
    path.write_text(text)
    return str(path)


def test_yaml_literal_eval_and_coercions(tmp_path):
    cfg = get_cfg_default()
    cfg.merge_from_file(_write_yaml(tmp_path / "a.yaml", (
        "INPUT:\n  SIZE: (32, 48)\n  TRANSFORMS: [\"random_flip\", \"normalize\"]\n"
        "OPTIM:\n  WARMUP_CONS_LR: 1e-5\n  LR: 0.002\n")))
    assert cfg.INPUT.SIZE == (32, 48)
    assert cfg.INPUT.TRANSFORMS == ("random_flip", "normalize")  # list -> tuple (default's type)
    assert isinstance(cfg.OPTIM.WARMUP_CONS_LR, float) and cfg.OPTIM.WARMUP_CONS_LR == 1e-5

    cfg.merge_from_list(["DATASET.NUM_SHOTS", "16", "VERBOSE", "False", "OPTIM.STEPSIZE", "[5, 10]",
                         "DATASET.SUBSAMPLE_CLASSES", "base"])
    assert cfg.DATASET.NUM_SHOTS == 16 and cfg.VERBOSE is False
    assert cfg.OPTIM.STEPSIZE == (5, 10) and cfg.DATASET.SUBSAMPLE_CLASSES == "base"

    with pytest.raises(ValueError, match="Type mismatch"):
        cfg.merge_from_list(["OPTIM.LR", "1"])  # int -> float is refused


def test_unknown_keys_odd_lists_and_freeze(tmp_path):
    cfg = get_cfg_default()
    with pytest.raises(KeyError, match="Non-existent config key: OPTIM.LRR"):
        cfg.merge_from_file(_write_yaml(tmp_path / "b.yaml", "OPTIM:\n  LRR: 0.1\n"))
    with pytest.raises(AssertionError, match="Non-existent key: OPTIM.LRR"):
        cfg.merge_from_list(["OPTIM.LRR", "0.1"])
    with pytest.raises(AssertionError, match="odd length"):
        cfg.merge_from_list(["OPTIM.LR"])
    cfg.freeze()
    with pytest.raises(AttributeError, match="immutable"):
        cfg.OPTIM.LR = 1.0
    assert cfg.clone().is_frozen()
    cfg.defrost()
    cfg.OPTIM.LR = 1.0
    assert cfg.OPTIM.LR == 1.0


def test_str_is_sorted_yaml_like():
    text = str(get_cfg_default())
    lines = text.splitlines()
    top = [line.split(":")[0] for line in lines if not line.startswith(" ")]
    assert top == sorted(top)
    assert "RESUME: " in lines and "  SIZE: (224, 224)" in lines
    assert yaml.safe_load(text.replace("(224, 224)", "x").replace("(0.08, 1.0)", "x"))["SEED"] == -1
