"""The search step (dpl.search.BilevelSearch) and the α-step batches (trainers.dpl_search)."""
import pytest
import torch

from dpl.model import build_supernet_model
from dpl.search import BilevelSearch
from trainers.dpl_search import CyclingBatches

CLASSES = ["red circle", "blue square", "green cross"]


def make_search(clip_model, mode):
    torch.manual_seed(0)
    model = build_supernet_model(clip_model, CLASSES, [0, 2, 4], [0, 2])
    prompt_opt = torch.optim.SGD(model.prompt_parameters(), lr=0.1, momentum=0.9, weight_decay=5e-4)
    return model, BilevelSearch(model, prompt_opt, lr=0.05, mode=mode)


def batch(seed):
    g = torch.Generator().manual_seed(seed)
    return torch.randn(4, 3, 32, 32, generator=g), torch.randint(0, 3, (4,), generator=g)


@pytest.mark.parametrize("mode", ["alternate", "simultaneous"])
def test_alpha_moves_only_by_its_own_optimizer(clip_model, mode):
    model, search = make_search(clip_model, mode)
    clip_before = {k: v.clone() for k, v in clip_model.state_dict().items()}
    alpha0 = [a.detach().clone() for a in model.arch_parameters()]
    prompts0 = [p.detach().clone() for p in model.prompt_parameters()]
    # the prompt optimizer never holds α (its weight decay would move α)
    held = {id(p) for g in search.prompt_optimizer.param_groups for p in g["params"]}
    assert not held & {id(a) for a in model.arch_parameters()}

    stepped = []
    original = search.alpha_optimizer.step

    def tracked_step(*a, **k):
        stepped.append([x.detach().clone() for x in model.arch_parameters()])
        out = original(*a, **k)
        stepped.append([x.detach().clone() for x in model.arch_parameters()])
        return out

    search.alpha_optimizer.step = tracked_step
    out = search.step(batch(1), batch(2))
    assert set(out) == {"loss", "loss_val", "acc"}
    before_alpha_step, after_alpha_step = stepped
    # α changed in the α step and nowhere else
    assert all(torch.equal(a, b) for a, b in zip(alpha0, before_alpha_step))
    assert any(not torch.equal(a, b) for a, b in zip(before_alpha_step, after_alpha_step))
    assert all(torch.equal(a, b) for a, b in zip(after_alpha_step, model.arch_parameters()))
    assert any(not torch.equal(p, q) for p, q in zip(prompts0, model.prompt_parameters()))
    assert all(torch.equal(v, clip_before[k]) for k, v in clip_model.state_dict().items())


def test_alternate_mode_uses_the_updated_alpha_for_the_prompt_step(clip_model):
    """Algorithm 1 order: the prompt step sees α after this iteration's α step."""
    model, search = make_search(clip_model, "alternate")
    seen = []
    original = model.forward

    def recording_forward(images, text_features=None):
        seen.append(model.arch_parameters()[0].detach().clone())
        return original(images, text_features=text_features)

    model.forward = recording_forward
    search.step(batch(1), batch(2))
    assert len(seen) == 2 and not torch.equal(seen[0], seen[1])


def test_cycling_batches_cover_each_pass_and_resume_exactly():
    data = list(range(10))
    batches = CyclingBatches(data, batch_size=4, seed=3)
    one_pass = [batches.batch_indices(k) for k in range(batches.batches_per_pass)]
    assert sorted(i for b in one_pass for i in b) == data           # every item once per pass
    assert [batches.batch_indices(k) for k in range(3, 6)] != one_pass  # next pass: new order
    batches.start(0)
    run = [batches.next().tolist() for _ in range(5)]
    batches.start(3)  # a resumed run continuing at batch 3
    assert [batches.next().tolist() for _ in range(2)] == run[3:]
