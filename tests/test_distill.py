import math

import torch

from dpl.distill import kd_loss


def test_kd_loss_closed_form():
    s = torch.tensor([[1.0, 0.0], [0.0, 0.0]])
    t = torch.tensor([[0.0, 0.0], [2.0, 0.0]])
    T = 2.0

    def sm(x):
        e = [math.exp(v / T) for v in x]
        return [v / sum(e) for v in e]

    expected = 0.0
    for srow, trow in zip(s.tolist(), t.tolist()):
        ps, pt = sm(srow), sm(trow)
        expected += sum(a * math.log(a / b) for a, b in zip(pt, ps))
    expected = T * T * expected / 2
    assert abs(kd_loss(s, t, T).item() - expected) < 1e-6
    assert kd_loss(t, t, 1.0).item() < 1e-7
