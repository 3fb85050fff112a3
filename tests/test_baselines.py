"""Baselines (ZeroshotCLIP, CoOp, IVLP, MaPLe): token mechanics on a tiny CLIP, then each trainer
end to end through train.py on the miniature DTD."""
import os

import open_clip
import pytest
import torch
import torch.nn.functional as F

from dpl.baselines import build_coop, build_ivlp, build_maple, build_zeroshot
from dpl.prompts import PromptConfigError
from dpl.text_inputs import tokenize
from tests.helpers.runs import (final_accuracy, run_killed_after_first_epoch, run_train, tiny_opts,
                                train_args)

CLASSNAMES = ["banded", "braided_rope", "chequered wool pattern"]


@pytest.fixture(scope="module")
def images():
    return torch.randn(2, 3, 32, 32, generator=torch.Generator().manual_seed(0))


def reference_logits(clip_model, images, texts):
    """open_clip's own encoders: the numbers every baseline must start from."""
    with torch.no_grad():
        img = F.normalize(clip_model.encode_image(images), dim=-1)
        txt = F.normalize(clip_model.encode_text(open_clip.tokenize(texts)), dim=-1)
        return clip_model.logit_scale.exp() * img @ txt.t()


def block_inputs(blocks):
    """Record the token tensor each block receives; returns (records, remove)."""
    records = {}
    handles = [b.register_forward_pre_hook(
        lambda m, args, kwargs, i=i: records.__setitem__(i, args[0].detach().clone()), with_kwargs=True)
        for i, b in enumerate(blocks)]
    return records, lambda: [h.remove() for h in handles]


def randomise(model):
    """Distinct random prompts, so every equality below can only hold for the right tensor."""
    with torch.no_grad():
        for p in model.prompt_parameters():
            p.normal_()


# ----------------------------------------------------------------------------------------------
# Zero-shot and CoOp
# ----------------------------------------------------------------------------------------------
def test_zeroshot_logits_equal_open_clip(clip_model, images):
    model = build_zeroshot(clip_model, CLASSNAMES, "{} texture.")
    with torch.no_grad():
        logits = model(images)
    expected = reference_logits(clip_model, images, [f"{c.replace('_', ' ')} texture." for c in CLASSNAMES])
    assert logits.shape == (2, 3)
    assert torch.allclose(logits, expected, atol=1e-5)
    assert model.prompt_parameters() == [] and list(model.prompt_learner.parameters()) == []


def test_coop_initialised_from_words_equals_zeroshot(clip_model, images):
    coop = build_coop(clip_model, CLASSNAMES, n_ctx=16, ctx_init="a photo of a")
    zs = build_zeroshot(clip_model, CLASSNAMES, "a photo of a {}.")
    assert coop.prompt_learner.ctx.shape == (4, 64)  # N_CTX = the init words' token count
    with torch.no_grad():
        assert (coop(images) - zs(images)).abs().max() <= 1e-5


@pytest.mark.parametrize("position, sentence", [
    ("end", "{w} {w} {w} {w} {name}."),
    ("middle", "{w} {w} {name} {w} {w}."),
    ("front", "{name} {w} {w} {w} {w}."),
])
def test_coop_class_token_positions_with_class_specific_context(clip_model, position, sentence):
    coop = build_coop(clip_model, CLASSNAMES, n_ctx=4, csc=True, class_token_position=position)
    words = ["x", "y", "z"]  # class c's context = 4 copies of the embedding of words[c]
    emb = clip_model.token_embedding
    with torch.no_grad():
        for c, w in enumerate(words):
            coop.prompt_learner.ctx[c] = emb(tokenize([w], 77))[0, 1]
        got = coop.prompt_learner.text_inputs(coop.token_embeddings, coop.name_lens)
        texts = [sentence.format(w=w, name=n.replace("_", " ")) for w, n in zip(words, CLASSNAMES)]
        expected = emb(tokenize(texts, 77))
    bpe = open_clip.tokenizer.SimpleTokenizer()
    lens = [len(bpe.encode(n.replace("_", " "))) for n in CLASSNAMES]
    assert coop.name_lens.tolist() == lens and max(lens) > 2  # multi-token names are exercised
    assert torch.equal(got, expected[:, :got.shape[1]])  # inputs are cut after the last EOT
    assert got.shape[1] == int(tokenize(texts, 77).argmax(-1).max()) + 1


def test_unknown_class_token_position_is_refused(clip_model):
    with pytest.raises(PromptConfigError, match="CLASS_TOKEN_POSITION = 'top' is unknown"):
        build_coop(clip_model, CLASSNAMES, class_token_position="top")


def test_class_specific_context_cannot_move_to_other_classes(clip_model):
    coop = build_coop(clip_model, CLASSNAMES, n_ctx=2, csc=True)
    coop.set_classnames(["bubbly", "bumpy"])
    with pytest.raises(ValueError, match="made for 3 classes but the model now has 2"):
        coop.encode_text()


# ----------------------------------------------------------------------------------------------
# IVLP: in-sequence replacement per block
# ----------------------------------------------------------------------------------------------
@pytest.mark.parametrize("depth_text, depth_vision", [(2, 1), (3, 2)])
def test_ivlp_tokens_per_block(clip_model, images, depth_text, depth_vision):
    n_t, n_v = 2, 3
    model = build_ivlp(clip_model, CLASSNAMES, n_ctx_text=n_t, n_ctx_vision=n_v,
                       depth_text=depth_text, depth_vision=depth_vision, ctx_init="a photo of a")
    text, vision = model.prompt_learner.text, model.prompt_learner.vision
    assert text.lengths == [n_t] * depth_text + [0] * (3 - depth_text)
    assert vision.lengths == [n_v] * depth_vision + [0] * (2 - depth_vision)
    # Shallow context = the embeddings of "a photo"; "of a <class>." stays fixed text.
    words = clip_model.token_embedding(tokenize(["a photo of a"], 77))[0, 1:1 + n_t]
    assert torch.equal(text.per_block()[0], words)
    assert model.prompt_learner.class_template == "a photo of a {}."
    randomise(model)
    t_prompts, v_prompts = text.per_block(), vision.per_block()

    t_rec, t_done = block_inputs(clip_model.transformer.resblocks)
    v_rec, v_done = block_inputs(clip_model.visual.transformer.resblocks)
    with torch.no_grad():
        model.encode_text()
        model.encode_image(images)
        embedded = model.image_encoder.embed(images)  # CLS + patches after ln_pre
    t_done()
    v_done()

    length = model.token_embeddings.shape[1]  # max(EOT) + 1: "a photo of a hot air balloon."
    assert length == 11
    pos = model.text_encoder.positional_embedding[:length]
    x0 = t_rec[0]
    assert x0.shape == (3, length, 64)
    assert torch.allclose(x0[:, 1:1 + n_t], (t_prompts[0] + pos[1:1 + n_t]).expand(3, -1, -1))
    assert torch.allclose(x0[:, 1 + n_t:], (model.token_embeddings + pos)[:, 1 + n_t:])
    for i in range(1, 3):
        assert t_rec[i].shape == (3, length, 64)
        if i < depth_text:
            assert torch.equal(t_rec[i][:, 1:1 + n_t], t_prompts[i].expand(3, -1, -1))
        else:  # blocks >= D run unchanged: what is there is block i-1's output
            assert not any(p is not None and torch.allclose(t_rec[i][:, 1:1 + n_t], p.expand(3, -1, -1))
                           for p in t_prompts)

    ln_pre = clip_model.visual.ln_pre
    v0 = v_rec[0]
    assert v0.shape == (2, 1 + 16 + n_v, 128)
    assert torch.allclose(v0[:, :-n_v], embedded)
    assert torch.allclose(v0[:, -n_v:], ln_pre(v_prompts[0]).expand(2, -1, -1), atol=1e-6)
    v1 = v_rec[1]
    assert v1.shape == (2, 1 + 16 + n_v, 128)
    if depth_vision > 1:
        assert torch.equal(v1[:, -n_v:], v_prompts[1].expand(2, -1, -1))
    else:
        assert not torch.allclose(v1[:, -n_v:], v_prompts[0].expand(2, -1, -1))


def test_ivlp_language_only_at_depth_one_is_zeroshot(clip_model, images):
    # 4 text tokens from "a photo of a", no deeper prompts, no image prompt = zero-shot CLIP.
    model = build_ivlp(clip_model, CLASSNAMES, n_ctx_text=4, n_ctx_vision=0, depth_text=1,
                       depth_vision=0, ctx_init="a photo of a")
    assert model.prompt_learner.vision.prompt_parameters() == []
    with torch.no_grad():
        logits = model(images)
    expected = reference_logits(clip_model, images, [f"a photo of a {c.replace('_', ' ')}." for c in CLASSNAMES])
    assert torch.allclose(logits, expected, atol=1e-5)


def test_short_init_words_are_refused(clip_model):
    with pytest.raises(PromptConfigError, match=r"TRAINER.IVLP.CTX_INIT = 'a photo' has 2 tokens but TRAINER.IVLP.N_CTX_TEXT is 3"):
        build_ivlp(clip_model, CLASSNAMES, n_ctx_text=3, ctx_init="a photo")


# ----------------------------------------------------------------------------------------------
# MaPLe: vision prompts are linear maps of the text prompts
# ----------------------------------------------------------------------------------------------
def test_maple_vision_prompts_are_maps_of_text_prompts(clip_model, images):
    model = build_maple(clip_model, CLASSNAMES, n_ctx=2, depth=9, ctx_init="a photo of a")
    learner = model.prompt_learner
    randomise(model)
    text = learner.text.per_block()
    assert learner.text.lengths == [2, 2, 2]  # depth 9 capped at the 3 text blocks
    vision = learner.vision_prompts()
    assert len(vision) == 2 and len(learner.proj) == 2
    for i in range(2):
        proj = learner.proj[f"block{i}"]
        assert (proj.in_features, proj.out_features) == (64, 128)
        assert torch.allclose(vision[i], text[i] @ proj.weight.t() + proj.bias)

    rec, done = block_inputs(clip_model.visual.transformer.resblocks)
    with torch.no_grad():
        model.encode_image(images)
    done()
    ln_pre = clip_model.visual.ln_pre
    assert torch.allclose(rec[0][:, -2:], ln_pre(vision[0]).expand(2, -1, -1), atol=1e-6)
    assert torch.allclose(rec[1][:, -2:], vision[1].expand(2, -1, -1))


def test_maple_image_loss_reaches_text_prompts_through_the_coupling(clip_model, images):
    model = build_maple(clip_model, CLASSNAMES, n_ctx=2, depth=3)
    model.encode_image(images).sum().backward()  # the text encoder is not involved at all
    blocks = dict(model.prompt_learner.text.prompts.items())
    for i in (0, 1):  # coupled to vision blocks 0 and 1
        assert blocks[f"block{i}"].grad is not None and blocks[f"block{i}"].grad.abs().sum() > 0
    assert blocks["block2"].grad is None  # the tiny image tower has only 2 blocks


# ----------------------------------------------------------------------------------------------
# All baselines: only prompts learn; base -> new keeps the prompts
# ----------------------------------------------------------------------------------------------
BUILDERS = {
    "CoOp": lambda clip: build_coop(clip, CLASSNAMES, n_ctx=4),
    "CoOp-csc-front": lambda clip: build_coop(clip, CLASSNAMES, n_ctx=4, csc=True,
                                              class_token_position="front"),
    "IVLP": lambda clip: build_ivlp(clip, CLASSNAMES, depth_text=3, depth_vision=2),
    "MaPLe": lambda clip: build_maple(clip, CLASSNAMES, depth=3),
}


@pytest.mark.parametrize("name", list(BUILDERS))
def test_one_step_moves_prompts_only(clip_model, images, name):
    model = BUILDERS[name](clip_model)
    learner = model.prompt_learner
    params = model.prompt_parameters()
    # the learner holds exactly the learnable tensors, and nothing else (no buffers)
    assert {id(p) for p in params} == {id(p) for p in learner.parameters()}
    assert {id(p) for p in model.parameters() if p.requires_grad} == {id(p) for p in params}
    assert set(learner.state_dict()) == {n for n, _ in learner.named_parameters()}
    clip_before = {k: v.clone() for k, v in clip_model.state_dict().items()}
    prompts_before = [p.detach().clone() for p in params]

    model.train()
    optim = torch.optim.SGD(params, lr=0.5)
    F.cross_entropy(model(images), torch.tensor([0, 2])).backward()
    optim.step()

    assert all(torch.equal(v, clip_before[k]) for k, v in clip_model.state_dict().items())
    assert all(p.grad is None for p in clip_model.parameters())
    assert all(not torch.equal(p, b) for p, b in zip(params, prompts_before))
    assert not clip_model.training and not clip_model.visual.training  # CLIP stays in eval mode


def test_set_classnames_keeps_prompts_for_new_classes(clip_model, images):
    base = build_ivlp(clip_model, CLASSNAMES, depth_text=3, depth_vision=2)
    randomise(base)
    new_classes = ["bubbly", "bumpy_surface"]
    fresh = build_ivlp(clip_model, new_classes, depth_text=3, depth_vision=2)
    fresh.prompt_learner.load_state_dict(base.prompt_learner.state_dict())
    base.set_classnames(new_classes)
    with torch.no_grad():
        assert base(images).shape == (2, 2)
        assert torch.allclose(base(images), fresh(images))


# ----------------------------------------------------------------------------------------------
# Trainers through train.py
# ----------------------------------------------------------------------------------------------
TRAINERS = {  # trainer: (default config, config section, checkpoint module name)
    "CoOp": ("vit_b16_ep50", "COOP", "prompt_learner"),
    "IVLP": ("vit_b16_c2_ep5_batch4_2+2ctx", "IVLP", "VLPromptLearner"),
    "MaPLe": ("vit_b16_c2_ep5_batch4_2ctx", "MAPLE", "MultiModalPromptLearner"),
}


def build(trainer, config, root, clip_path, out, opts=()):
    """A trainer built from the command line, without training (data + model only)."""
    import train
    from dassl.engine import build_trainer

    args = train.get_parser().parse_args(train_args(trainer, config, "dtd", root, out)
                                         + tiny_opts(clip_path) + list(opts))
    return build_trainer(train.setup_cfg(args))


def test_coop_trainer_before_training_equals_zeroshot_trainer(data_root, tiny_clip_path, tmp_path,
                                                              images):
    coop = build("CoOp", "vit_b16_ep50_ctxv1", data_root, tiny_clip_path, tmp_path / "c",
                 ["TRAINER.COOP.PREC", "fp32"])
    zs = build("ZeroshotCLIP", "vit_b16", data_root, tiny_clip_path, tmp_path / "z",
               ["TRAINER.ZEROSHOTCLIP.PREC", "fp32", "TRAINER.ZEROSHOTCLIP.TEMPLATE", "a photo of a {}."])
    assert zs.get_model_names() == []  # ZeroshotCLIP registers nothing
    assert coop.get_model_names() == ["prompt_learner"]
    with torch.no_grad():
        assert (coop.model(images) - zs.model(images)).abs().max() <= 1e-5


@pytest.mark.slow
@pytest.mark.parametrize("trainer", list(TRAINERS))
def test_trainer_trains_saves_prompts_and_eval_only_reproduces(trainer, data_root, tiny_clip_path,
                                                               tmp_path):
    config, section, module = TRAINERS[trainer]
    prec = [f"TRAINER.{section}.PREC", "fp32"]
    out = tmp_path / "train"
    run_train(train_args(trainer, config, "dtd", data_root, out) + tiny_opts(tiny_clip_path, epochs=1)
              + prec)
    acc = final_accuracy(out / "log.txt")
    ckpt_path = out / module / "model.pth.tar-1"
    ckpt = torch.load(ckpt_path, weights_only=True)
    expected_keys = {"CoOp": {"ctx"},
                     "IVLP": {f"text.prompts.block{i}" for i in range(3)}
                     | {f"vision.prompts.block{i}" for i in range(2)},
                     "MaPLe": {f"text.prompts.block{i}" for i in range(3)}
                     | {f"proj.block{i}.{p}" for i in range(2) for p in ("weight", "bias")}}[trainer]
    assert set(ckpt["state_dict"]) == expected_keys  # prompts only, never CLIP
    assert ckpt["epoch"] == 1

    ev = tmp_path / "eval"
    run_train(train_args(trainer, config, "dtd", data_root, ev,
                         extra=["--eval-only", "--model-dir", str(out), "--load-epoch", "1"])
              + tiny_opts(tiny_clip_path) + prec)
    assert final_accuracy(ev / "log.txt") == acc
    assert f'Loading weights to {module} from "{ckpt_path}"' in (ev / "log.txt").read_text()
    # The fixture's images are all alike, so equal accuracy alone proves little: check the tensors.
    fresh = build(trainer, config, data_root, tiny_clip_path, tmp_path / "fresh", prec)
    fresh.load_model(str(out), epoch=1)
    loaded = fresh.model.prompt_learner.state_dict()
    assert all(torch.equal(loaded[k], v) for k, v in ckpt["state_dict"].items())


@pytest.mark.slow
def test_zeroshot_trainer_evaluates_and_refuses_to_train(data_root, tiny_clip_path, tmp_path, capsys):
    opts = tiny_opts(tiny_clip_path) + ["TRAINER.ZEROSHOTCLIP.PREC", "fp32"]
    out = tmp_path / "zs"
    run_train(train_args("ZeroshotCLIP", "vit_b16", "dtd", data_root, out, extra=["--eval-only"]) + opts)
    log = (out / "log.txt").read_text()
    assert 'ZeroshotCLIP: template "{} texture."' in log  # CoOp's DTD template
    assert 0 <= final_accuracy(out / "log.txt") <= 100
    assert not any(os.path.isdir(out / d) and d != "tensorboard" for d in os.listdir(out))  # saves nothing

    with pytest.raises(SystemExit) as exit_info:
        run_train(train_args("ZeroshotCLIP", "vit_b16", "dtd", data_root, tmp_path / "zs2") + opts)
    assert exit_info.value.code == 2
    assert "nothing to train; run train.py with --eval-only" in capsys.readouterr().err


def test_fp16_on_cpu_names_the_trainers_key(data_root, tiny_clip_path, tmp_path, capsys):
    with pytest.raises(SystemExit):
        run_train(train_args("MaPLe", "vit_b16_c2_ep5_batch4_2ctx", "dtd", data_root, tmp_path / "m")
                  + tiny_opts(tiny_clip_path))  # the config's PREC is fp16
    assert "TRAINER.MAPLE.PREC is fp16" in capsys.readouterr().err


@pytest.mark.slow
def test_eval_with_another_prompt_setting_is_a_clear_error(data_root, tiny_clip_path, tmp_path, capsys):
    out = tmp_path / "train"
    opts = tiny_opts(tiny_clip_path, epochs=1) + ["TRAINER.COOP.PREC", "fp32", "TRAINER.COOP.N_CTX", "4"]
    run_train(train_args("CoOp", "vit_b16_ep50", "dtd", data_root, out) + opts)
    with pytest.raises(SystemExit):
        run_train(train_args("CoOp", "vit_b16_ep50", "dtd", data_root, tmp_path / "ev",
                             extra=["--eval-only", "--model-dir", str(out), "--load-epoch", "1"])
                  + opts[:-2] + ["TRAINER.COOP.N_CTX", "8"])
    err = capsys.readouterr().err
    # The same one-line message as DPLTrain's (trainers/_common.py, test_bad_inputs.py): file, shapes.
    assert f'Checkpoint "{out / "prompt_learner" / "model.pth.tar-1"}" does not fit this model' in err
    assert "ctx: expected (8, " in err and "found (4, " in err and "TRAINER.COOP.*" in err


@pytest.mark.slow
def test_killed_run_resumes_to_the_same_prompts(data_root, tiny_clip_path, tmp_path, monkeypatch):
    from trainers.ivlp import IVLP

    config, section, module = TRAINERS["IVLP"]
    opts = tiny_opts(tiny_clip_path, epochs=2) + [f"TRAINER.{section}.PREC", "fp32"]
    run_train(train_args("IVLP", config, "dtd", data_root, tmp_path / "whole") + opts)

    killed = tmp_path / "killed"
    run_killed_after_first_epoch(monkeypatch, IVLP,
                                 train_args("IVLP", config, "dtd", data_root, killed) + opts)
    run_train(train_args("IVLP", config, "dtd", data_root, killed) + opts)  # same command again

    assert "Previous epoch: 1" in "".join(p.read_text() for p in killed.glob("log.txt*"))
    assert sorted(os.listdir(killed / module)) == ["checkpoint", "model.pth.tar-2"]  # KEEP_CHECKPOINTS 1
    a = torch.load(tmp_path / "whole" / module / "model.pth.tar-2", weights_only=True)["state_dict"]
    b = torch.load(killed / module / "model.pth.tar-2", weights_only=True)["state_dict"]
    assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)
