import torch

from dpl.search import AlphaHistory, branch_record


def test_branch_record_metrics():
    prev = torch.tensor([[0.5, 0.5], [0.9, 0.1]])
    alpha = torch.log(torch.tensor([[0.2, 0.8], [0.9, 0.1]]))
    rec = branch_record(alpha, [0, 4], 0.75, prev)
    assert rec["lengths"] == [4, 0]
    assert rec["num_dominant"] == 2            # 0.8 and 0.9 >= 0.75
    assert rec["argmax_changes"] == 1          # block 0: tie(->0) to 4
    assert abs(rec["tv_distance"] - 0.15) < 1e-6  # mean(0.3, 0.0)


def test_history_replaces_redone_epochs_and_counts_unchanged():
    h = AlphaHistory({"text": [0, 2], "vision": [0, 2]}, 0.5,
                     initial_probs={"text": torch.full((1, 2), 0.5), "vision": torch.full((1, 2), 0.5)})
    a = {"text": torch.tensor([[0.0, 1.0]]), "vision": torch.tensor([[1.0, 0.0]])}
    h.add(1, a)
    h.add(2, a)
    h.add(3, a)
    assert h.unchanged_epochs() == 2
    h.add(2, {"text": torch.tensor([[1.0, 0.0]]), "vision": a["vision"]})  # a resumed run redoes epoch 2
    assert [r["epoch"] for r in h.records] == [1, 2]
    assert h.records[-1]["text"]["argmax_changes"] == 1
    assert h.unchanged_epochs() == 0


def _search_cfg(*opts):
    from dassl.config import get_cfg_default
    from trainers.config import extend_cfg

    cfg = get_cfg_default()
    extend_cfg(cfg)
    cfg.merge_from_list(["TRAINER.NAME", "DPLSearch", "DATASET.NAME", "DescribableTextures",
                         "DATASET.NUM_SHOTS", "16", "SEED", "1", *opts])
    return cfg


def test_config_hash_covers_only_what_defines_the_search():
    from trainers.dpl_search import config_hash

    base = config_hash(_search_cfg())
    same = _search_cfg("DATALOADER.NUM_WORKERS", "0", "TRAIN.PRINT_FREQ", "1", "USE_CUDA", "False",
                       "OUTPUT_DIR", "/elsewhere", "RESUME", "/r", "DATASET.ROOT", "/data",
                       "MODEL.BACKBONE.PATH", "/ckpt/ViT-B-16.pt", "TRAINER.DPL.SEARCH.PLOT", "False",
                       "TRAIN.CHECKPOINT_FREQ", "1", "TRAIN.KEEP_CHECKPOINTS", "2")
    assert config_hash(same) == base
    for key, value in [("TRAINER.DPL.SEARCH.ALPHA_LR", "0.01"), ("DATASET.NUM_SHOTS", "4"),
                       ("SEED", "2"), ("DATASET.SUBSAMPLE_CLASSES", "base"),
                       ("DATASET.VAL_FROM_TRAIN", "True"), ("INPUT.SIZE", "(32, 32)"),
                       ("OPTIM.LR", "0.1"), ("DATALOADER.TRAIN_X.BATCH_SIZE", "8"),
                       ("MODEL.BACKBONE.NAME", "ViT-B/32"), ("TRAINER.DPL.PREC", "amp"),
                       ("TRAINER.DPL.SEARCH.TEXT_OPTIONS", "[0, 2]"),
                       # the search loop: the paper's loop and the fast one are different searches
                       ("TRAINER.DPL.SEARCH.ALPHA_EVERY", "4"), ("TRAINER.DPL.SEARCH.PATIENCE", "3"),
                       ("TRAINER.DPL.SEARCH.MIN_EPOCHS", "40")]:
        assert config_hash(_search_cfg(key, value)) != base, key
