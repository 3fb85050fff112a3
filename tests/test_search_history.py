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
