"""Whole search stage vs whole train stage: one DPLSearch step vs one DPLTrain step, and R.

At ViT-B/16 sizes (random-init open_clip weights, synthetic images, batch 4, fp32; CPU by default,
``--device cuda``), for C = 100 and C = 1000 classes:

- one DPLSearch step with the default search config (``trainers/config.py``: options, α batch
  ``VAL_BATCH_SIZE``, ``ALPHA_EVERY`` k -> the mean step is (α+prompt step + (k-1) prompt-only
  steps) / k, ``UPDATE_MODE``, ``IMPL``);
- one DPLTrain step on the paper's Fig. 2 Caltech101 configuration (as read from the figure; "0/2" cells
  read as 0): text [6,6,6,0,0,6,6,6,6,4,4,4], vision [0,0,0,0,6,0,6,0,0,6,0,6];
- the text and image parts of each (forward + backward of one text pass over all classes, of the
  image pass of a batch), saved-for-backward memory of each step's largest pass (and
  ``max_memory_allocated`` on CUDA), all before and after EOT truncation (77 tokens vs
  max(EOT) + 1; the class names are synthetic, the longest one as long as ImageNet's longest
  "a photo of a {}." sentence, 18 tokens). Before truncation only the text passes are measured
  (the image parts do not depend on the text length): the steps are the truncated steps plus the
  difference of their text passes, and memory likewise (a whole 77-token search step at C = 100
  needs > 20 GB of host memory on CPU).

Timing is CPU time of this process on CPU (steadier than wall time on a shared machine), wall time
on CUDA; ratios are measured within one run. C = 1000 on CPU is derived from C = 100: the text
parts (time and memory) are exactly linear in the number of classes (each class is encoded on its
own), so C = 1000 = the C = 100 step + 9 x its text parts; ``--direct-1000`` (default on CUDA)
measures it. The epoch ratio is the search epochs actually run by the new default in
``bench_search_quality.py`` ÷ train epochs (its JSON), else the configured epochs (80 / 40).
The last line is ``R = <step ratio> x <epoch ratio> = <R> (whole search / whole train stage)``.

    python benchmarks/bench_stages.py [--quick] [--device cuda] [--repeats N] [--quality-json PATH]
"""
from __future__ import annotations

import argparse
import json
import statistics
import sys
import time
from pathlib import Path

import torch
import torch.nn.functional as F

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))
sys.path.insert(0, str(REPO / "benchmarks"))
from bench_supernet import SavedBytes  # noqa: E402

from dpl.cost import random_init_clip  # noqa: E402
from dpl.model import build_fixed_model, build_supernet_model  # noqa: E402
from dpl.search import BilevelSearch  # noqa: E402
from dpl.text_inputs import class_prompts, tokenize  # noqa: E402

FIG2_CALTECH = ([6, 6, 6, 0, 0, 6, 6, 6, 6, 4, 4, 4], [0, 0, 0, 0, 6, 0, 6, 0, 0, 6, 0, 6])
TRAIN_EPOCHS, SEARCH_EPOCHS = 40, 80  # configs/trainers/DPL{Train,Search}/vit_b16.yaml
IMAGENET_LONGEST = 18  # tokens of the longest ImageNet "a photo of a {}." sentence (with SOS/EOT)
WORDS = ("dog", "golden", "retriever", "red", "fox", "sports", "car", "bell", "pepper", "snow",
         "leopard", "tiger", "shark", "cat", "space", "shuttle", "coffee", "mug", "steel", "bridge")
BATCH = 4


def class_names(num: int) -> list:
    """1-3 word names; the last one padded to ImageNet's longest sentence length."""
    names = [" ".join(WORDS[(7 * i + 3 * j) % len(WORDS)] for j in range(1 + i % 3)) for i in range(num)]
    while int(tokenize(class_prompts("a photo of a {}.", names[-1:]), 77).argmax()) < IMAGENET_LONGEST - 1:
        names[-1] += " dog"
    return names


def sync(device):
    if device.type == "cuda":
        torch.cuda.synchronize()


def timed(fn, device, repeats: int, memory: bool = False) -> dict:
    """Median seconds of ``fn()`` (CPU time on CPU, wall on CUDA); saved bytes / CUDA peak once."""
    out = {}
    if memory:
        saved = SavedBytes()
        if device.type == "cuda":
            torch.cuda.reset_peak_memory_stats()
        with torch.autograd.graph.saved_tensors_hooks(saved.pack, lambda t: t):
            fn()
        out["saved"] = saved.total
        if device.type == "cuda":
            out["peak"] = torch.cuda.max_memory_allocated()
    times = []
    for _ in range(repeats):
        sync(device)
        t0 = time.perf_counter() if device.type == "cuda" else time.process_time()
        fn()
        sync(device)
        times.append((time.perf_counter() if device.type == "cuda" else time.process_time()) - t0)
    if times:
        out["s"] = statistics.median(times)
    return out


def backward(loss, params):
    torch.autograd.grad(loss, params, allow_unused=True)


class Stage:
    """One model (search supernet or train configuration) and its timed pieces."""

    def __init__(self, model, cfg, search: bool):
        self.model, self.cfg, self.search = model, cfg, search
        self.params = model.prompt_parameters() + model.arch_parameters()

    def text(self):
        backward(self.model.encode_text().square().sum(), self.params)

    def image(self, images):
        return lambda: backward(self.model.encode_image(images).square().sum(), self.params)

    def pass_memory(self, images, labels):
        """Loss of one pass (text of every class + an image batch), for saved-tensor counting."""
        return lambda: F.cross_entropy(self.model(images), labels)


def build(clip, names, cfg, search: bool, truncate: bool):
    s = cfg.TRAINER.DPL.SEARCH
    torch.manual_seed(0)
    if search:
        model = build_supernet_model(clip, names, s.TEXT_OPTIONS, s.VISION_OPTIONS, impl=s.IMPL)
    else:
        model = build_fixed_model(clip, names, *FIG2_CALTECH)
    if not truncate:
        model.truncate_text = False
        model.set_classnames(names)
    return model


def measure_stage(clip, names, cfg, device, repeats, search: bool, truncate: bool, steps: bool,
                  images_from: dict = None):
    """Times (s) and memory (bytes) of one stage's step and parts at len(names) classes.

    images_from: the same stage's result at another text length; its image parts are reused (the
    text length does not touch them) and only the text pass is measured; memory follows exactly
    (a pass's saved tensors = its text pass's + its image pass's).
    """
    s = cfg.TRAINER.DPL.SEARCH
    model = build(clip, names, cfg, search, truncate)
    st = Stage(model, cfg, search)
    if images_from is not None and not steps:
        r = dict(images_from, tokens=int(model.token_embeddings.shape[1]), peak=None)
        r["text"] = timed(st.text, device, repeats)["s"]
        delta = r["text"] - images_from["text"]
        alpha_passes = 1 if s.UPDATE_MODE == "simultaneous" else 2
        for key, passes in (("step_alpha", alpha_passes), ("step_prompt", 1), ("step", 1)):
            if key in r:
                r[key] = images_from[key] + passes * delta
        r["mem_text"] = timed(lambda: model.encode_text(), device, 0, memory=True)["saved"]
        r["mem_step"] = images_from["mem_step"] + r["mem_text"] - images_from["mem_text"]
        return r
    g = torch.Generator().manual_seed(0)
    size = clip.visual.image_size
    size = size if isinstance(size, (tuple, list)) else (size, size)

    def batch(n):
        return (torch.randn(n, 3, *size, generator=g).to(device),
                torch.randint(0, len(names), (n,), generator=g).to(device))

    train, val = batch(BATCH), batch(s.VAL_BATCH_SIZE)
    r = {"tokens": int(model.token_embeddings.shape[1])}
    r["text"] = timed(st.text, device, repeats)["s"]
    r["image"] = timed(st.image(train[0]), device, repeats)["s"]
    mem = timed(lambda: st.pass_memory(*train)(), device, 0, memory=True)
    r["mem_text"] = timed(lambda: model.encode_text(), device, 0, memory=True)["saved"]
    r["mem_train_pass"] = mem["saved"]
    if search:
        r["image_val"] = timed(st.image(val[0]), device, repeats)["s"]
        val_mem = timed(lambda: st.pass_memory(*val)(), device, 0, memory=True)
        r["mem_step"] = max(mem["saved"], val_mem["saved"])
        r["peak"] = max(mem.get("peak", 0), val_mem.get("peak", 0)) or None
    else:
        r["mem_step"], r["peak"] = mem["saved"], mem.get("peak")
    if steps:
        opt = torch.optim.SGD(model.prompt_parameters(), lr=1e-12)
        if search:
            bs = BilevelSearch(model, opt, lr=1e-12, mode=s.UPDATE_MODE)
            r["step_alpha"] = timed(lambda: bs.step(train, val, True), device, repeats)["s"]
            r["step_prompt"] = timed(lambda: bs.step(train, None, False), device, repeats)["s"]
        else:
            def train_step():
                opt.zero_grad(set_to_none=True)
                F.cross_entropy(model(train[0]), train[1]).backward()
                opt.step()
            r["step"] = timed(train_step, device, repeats)["s"]
    del model, st
    return r


def search_step(r, k: int, mode: str) -> float:
    """Mean search step: measured steps if present, else from the parts (2 text passes per α step
    in alternate mode, 1 in simultaneous; 1 per prompt-only step)."""
    if "step_alpha" in r:
        return (r["step_alpha"] + (k - 1) * r["step_prompt"]) / k
    alpha_text = 1 if mode == "simultaneous" else 2
    with_alpha = alpha_text * r["text"] + r["image_val"] + r["image"]
    return (with_alpha + (k - 1) * (r["text"] + r["image"])) / k


def search_parts(r, k: int, mode: str) -> tuple:
    """(text, image) seconds of the mean search step."""
    alpha_text = 1 if mode == "simultaneous" else 2
    text = (alpha_text + (k - 1)) * r["text"] / k
    image = (r["image_val"] + k * r["image"]) / k
    return text, image


def scale_classes(r, factor: float) -> dict:
    """Parts at factor x the classes: text time and text memory are linear in the class count."""
    out = dict(r)
    extra_text = (factor - 1) * r["text"]
    out["text"] = r["text"] * factor
    for key in ("step_alpha",):  # an α step in alternate mode has 2 text passes
        if key in r:
            out[key] = r[key] + 2 * extra_text
    for key in ("step_prompt", "step"):
        if key in r:
            out[key] = r[key] + extra_text
    out["mem_step"] = r["mem_step"] + (factor - 1) * r["mem_text"]
    out["mem_text"] = r["mem_text"] * factor
    out["peak"] = None
    return out


def epoch_ratio(path: str) -> tuple:
    try:
        data = json.loads(Path(path).read_text())
        ratio = float(data["epoch_ratio"]["new"])
        st = data["settings"]
        return ratio, (f"measured: new default search ran {data['epochs_run']['new']:.1f} epochs on "
                       f"average vs {st['train_epochs']} train epochs ({path})")
    except (OSError, KeyError, ValueError) as err:
        return SEARCH_EPOCHS / TRAIN_EPOCHS, (f"configured: {SEARCH_EPOCHS} search / {TRAIN_EPOCHS} "
                                              f"train epochs (no quality JSON: {type(err).__name__})")


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--quick", action="store_true", help="1 repeat instead of 3")
    ap.add_argument("--repeats", type=int, default=None)
    ap.add_argument("--device", default="cpu")
    ap.add_argument("--direct-1000", action="store_true", help="measure C = 1000 (default on CUDA)")
    ap.add_argument("--quality-json", default=str(REPO / "benchmarks" / "results" / "search_quality.json"))
    ap.add_argument("--threads", type=int, default=None)
    args = ap.parse_args(argv)
    if args.threads:
        torch.set_num_threads(args.threads)
    device = torch.device(args.device)
    repeats = args.repeats or (1 if args.quick else 3)
    import train
    cfg = train.setup_cfg(train.get_parser().parse_args([]))
    s = cfg.TRAINER.DPL.SEARCH
    k, mode = int(s.ALPHA_EVERY), s.UPDATE_MODE
    clip = random_init_clip("ViT-B/16", device=str(device))
    print(f"torch {torch.__version__}, {device}, {torch.get_num_threads()} threads, fp32, batch "
          f"{BATCH}, random-init ViT-B/16, median of {repeats}; search defaults: options "
          f"{list(s.TEXT_OPTIONS)}/{list(s.VISION_OPTIONS)}, α batch {s.VAL_BATCH_SIZE}, ALPHA_EVERY "
          f"{k}, {mode}, {s.IMPL}; train: Fig. 2 Caltech101 configuration", flush=True)

    results = {}
    direct = args.direct_1000 or device.type == "cuda"
    for classes in (100, 1000):
        for truncate in (True, False):
            if classes == 1000 and not direct:
                results[(classes, truncate)] = {
                    st: scale_classes(results[(100, truncate)][st], 10.0) for st in ("search", "train")}
                continue
            names = class_names(classes)
            steps = truncate  # before truncation only the text passes change: time those
            cut = results.get((classes, True), {})
            results[(classes, truncate)] = {
                st: measure_stage(clip, names, cfg, device, repeats, st == "search", truncate, steps,
                                  cut.get(st))
                for st in ("search", "train")}
            print(f"  measured C={classes} {'truncated' if truncate else 'full 77'}", flush=True)

    rows, ratios = [], {}
    for (classes, truncate), r in results.items():
        se, tr = r["search"], r["train"]
        s_step = search_step(se, k, mode)
        t_step = tr["step"] if "step" in tr else tr["text"] + tr["image"]
        s_text, s_img = search_parts(se, k, mode)
        ratios[(classes, truncate)] = s_step / t_step
        peak = ""
        if se.get("peak"):
            peak = f" | {se['peak'] / 2**30:.2f} / {tr['peak'] / 2**30:.2f}"
        rows.append(f"| {classes} | {se['tokens']} | {s_step:.2f} | {t_step:.2f} | "
                    f"{s_step / t_step:.2f} | {100 * s_text / (s_text + s_img):.0f} % | "
                    f"{100 * tr['text'] / (tr['text'] + tr['image']):.0f} % | "
                    f"{se['mem_step'] / 2**30:.2f} | {tr['mem_step'] / 2**30:.2f}{peak} |")
    print("\n| classes | text tokens | search step s | train step s | step ratio | text share search "
          "| text share train | search saved GiB | train saved GiB"
          + (" | CUDA peak GiB search / train |" if device.type == "cuda" else " |"))
    print("|---|---|---|---|---|---|---|---|---|" + ("---|" if device.type == "cuda" else ""))
    print("\n".join(rows))
    for classes in (100, 1000):
        cut, full = results[(classes, True)], results[(classes, False)]
        print(f"C={classes}: truncation {full['search']['tokens']} -> {cut['search']['tokens']} "
              f"tokens: search step {search_step(full['search'], k, mode) / search_step(cut['search'], k, mode):.2f}x "
              f"faster, search saved memory {full['search']['mem_step'] / cut['search']['mem_step']:.2f}x "
              f"smaller; text pass {full['search']['text'] / cut['search']['text']:.2f}x faster")
    if not direct:
        print("C=1000 rows derived from C=100 (text parts x 10; exact, per-class text passes); "
              "--direct-1000 measures them.")
    step_ratio = ratios[(100, True)]
    e_ratio, how = epoch_ratio(args.quality_json)
    print(f"epoch ratio {e_ratio:.2f} ({how}); step ratio at C=100 after truncation")
    print(f"R = {step_ratio:.2f} x {e_ratio:.2f} = {step_ratio * e_ratio:.2f} (whole search / whole train stage)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
