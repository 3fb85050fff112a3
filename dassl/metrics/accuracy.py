"""Top-k accuracy of a batch of logits."""
import torch

__all__ = ["compute_accuracy"]


def compute_accuracy(output, target, topk=(1,)):
    """Top-k accuracies in percent, one ``(1,)`` float tensor per k.

    Args:
        output: logits ``(batch, num_classes)``, or a tuple/list whose first item is.
        target: labels ``(batch,)``.
        topk: the k values (any k <= num_classes).
    """
    if isinstance(output, (tuple, list)):
        output = output[0]
    batch_size = target.size(0)
    _, pred = output.topk(max(topk), dim=1, largest=True, sorted=True)  # (batch, maxk)
    hits = pred.eq(target.reshape(-1, 1))                               # (batch, maxk)
    res = []
    for k in topk:
        correct_k = hits[:, :k].any(dim=1).float().sum().reshape(1)
        res.append(correct_k * (100.0 / batch_size))
    return res
