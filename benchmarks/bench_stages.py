"""Whole search stage vs whole train stage: DPLSearch steps vs DPLTrain steps, and R, for both
search loops: the paper's (``configs/trainers/DPLSearch/vit_b16.yaml``: an α step at every prompt
step, all epochs) and the fast one (``vit_b16_fast.yaml``: an α step every 4th prompt step, early
stop from epoch 40).

At ViT-B/16 sizes (random-init open_clip weights, synthetic images, batch 4, fp32; CPU by default,
``--device cuda``), for C = 100 and C = 1000 classes:

- search and train steps measured *interleaved*: pair i times a search step with an α step, a
  prompt-only search step and a DPLTrain step back to back (the order flips every other pair), so
  load on the machine hits both sides of a pair alike; the step ratio is the median of the
  per-pair ratios (>= 3 pairs) and its spread the min-max of them. A search step of a loop with
  ``ALPHA_EVERY`` k costs (α+prompt step + (k-1) prompt-only steps) / k (k = 1: the paper's loop);
- the DPLTrain step runs the paper's Fig. 2 Caltech101 configuration ("0/2" cells read as 0):
  text [6,6,6,0,0,6,6,6,6,4,4,4], vision [0,0,0,0,6,0,6,0,0,6,0,6];
- the text and image parts of each (forward + backward of one text pass over all classes, of the
  image pass of a batch), saved-for-backward memory of each step's largest pass (and
  ``max_memory_allocated`` on CUDA), all before and after EOT truncation (77 tokens vs
  max(EOT) + 1; the class names are synthetic, the longest one as long as ImageNet's longest
  "a photo of a {}." sentence, 18 tokens). Before truncation only the text passes are measured
  (the image parts do not depend on the text length): the steps are the truncated steps plus the
  difference of their text passes, and memory likewise (a whole 77-token search step at C = 100
  needs > 20 GB of host memory on CPU).

Timing is CPU time of this process on CPU (steadier than wall time on a shared machine), wall time
on CUDA. C = 1000 on CPU is derived from C = 100: the text parts (time and memory) are exactly
linear in the number of classes (each class is encoded on its own), so C = 1000 = the C = 100 step
+ 9 x its text parts; ``--direct-1000`` (default on CUDA) measures it.

R = step ratio x epoch ratio (whole search / whole train stage). The paper loop's epoch ratio is
its MAX_EPOCH / DPLTrain's (80 / 40); the fast loop's is the epochs it actually ran in
``bench_search_quality.py`` / train epochs (its JSON), else MIN_EPOCHS / train epochs (the soonest
it can stop). The last two lines are ``R <loop> = <step ratio> x <epoch ratio> = <R> ...``.

    python benchmarks/bench_stages.py [--quick] [--pairs N] [--device cuda] [--repeats N]
        [--threads N] [--quality-json PATH]
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
CONFIGS = {"paper": ("DPLSearch", "vit_b16"), "fast": ("DPLSearch", "vit_b16_fast"),
           "train": ("DPLTrain", "vit_b16")}
LOOP_KEYS = ("ALPHA_EVERY", "PATIENCE", "MIN_EPOCHS")
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


def clocked(fn, device) -> float:
    """Seconds of one ``fn()``: CPU time of this process on CPU, wall time on CUDA."""
    clock = time.perf_counter if device.type == "cuda" else time.process_time
    sync(device)
    t0 = clock()
    fn()
    sync(device)
    return clock() - t0


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
    times = [clocked(fn, device) for _ in range(repeats)]
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


def synthetic_batch(clip, names, device, n, g):
    size = clip.visual.image_size
    size = size if isinstance(size, (tuple, list)) else (size, size)
    return (torch.randn(n, 3, *size, generator=g).to(device),
            torch.randint(0, len(names), (n,), generator=g).to(device))


def measure_stage(clip, names, cfg, device, repeats, search: bool, truncate: bool,
                  images_from: dict = None):
    """Times (s) and memory (bytes) of one stage's parts at len(names) classes (the steps come from
    ``interleaved_steps``).

    images_from: the same stage's result at another text length; its image parts are reused (the
    text length does not touch them) and only the text pass is measured; its steps and memory
    follow exactly (a pass's saved tensors = its text pass's + its image pass's).
    """
    s = cfg.TRAINER.DPL.SEARCH
    model = build(clip, names, cfg, search, truncate)
    st = Stage(model, cfg, search)
    if images_from is not None:
        r = dict(images_from, tokens=int(model.token_embeddings.shape[1]), peak=None, pairs=None)
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
    train = synthetic_batch(clip, names, device, BATCH, g)
    val = synthetic_batch(clip, names, device, s.VAL_BATCH_SIZE, g)
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
    del model, st
    return r


def interleaved_steps(clip, names, cfg, device, pairs: int, truncate: bool = True) -> dict:
    """Per-pair seconds of a search step with an α step (``alpha``), a prompt-only search step
    (``prompt``) and a DPLTrain step (``train``), timed back to back in each pair (order flipped every
    other pair) after one untimed warm-up step of each."""
    s = cfg.TRAINER.DPL.SEARCH
    search_model = build(clip, names, cfg, True, truncate)
    train_model = build(clip, names, cfg, False, truncate)
    g = torch.Generator().manual_seed(0)
    train = synthetic_batch(clip, names, device, BATCH, g)
    val = synthetic_batch(clip, names, device, s.VAL_BATCH_SIZE, g)
    bs = BilevelSearch(search_model, torch.optim.SGD(search_model.prompt_parameters(), lr=1e-12),
                       lr=1e-12, mode=s.UPDATE_MODE)
    train_opt = torch.optim.SGD(train_model.prompt_parameters(), lr=1e-12)

    def train_step():
        train_opt.zero_grad(set_to_none=True)
        F.cross_entropy(train_model(train[0]), train[1]).backward()
        train_opt.step()

    steps = {"alpha": lambda: bs.step(train, val, True), "prompt": lambda: bs.step(train, None, False),
             "train": train_step}
    for fn in steps.values():
        fn()
    out = {key: [] for key in steps}
    for i in range(pairs):
        for key in (("alpha", "prompt", "train") if i % 2 == 0 else ("train", "prompt", "alpha")):
            out[key].append(clocked(steps[key], device))
    del search_model, train_model, bs
    return out


def loop_step(alpha: float, prompt: float, k: int) -> float:
    """Mean search step of a loop with an α step every k prompt steps."""
    return (alpha + (k - 1) * prompt) / k


def pair_ratios(pairs: dict, k: int) -> list:
    """Search step / train step of each interleaved pair, for ALPHA_EVERY k."""
    return [loop_step(a, p, k) / t for a, p, t in zip(pairs["alpha"], pairs["prompt"], pairs["train"])]


def search_step(r, k: int, mode: str) -> float:
    """Mean search step: measured steps if present, else from the parts (2 text passes per α step
    in alternate mode, 1 in simultaneous; 1 per prompt-only step)."""
    if "step_alpha" in r:
        return loop_step(r["step_alpha"], r["step_prompt"], k)
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
    out = dict(r, pairs=None)
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


def load_cfgs() -> dict:
    """The configs of CONFIGS; the fast loop must differ from the paper's only in LOOP_KEYS."""
    import train

    cfgs = {}
    for name, (trainer, config) in CONFIGS.items():
        path = REPO / "configs" / "trainers" / trainer / f"{config}.yaml"
        cfgs[name] = train.setup_cfg(train.get_parser().parse_args(
            ["--trainer", trainer, "--config-file", str(path)]))
    paper, fast = cfgs["paper"].TRAINER.DPL.SEARCH, cfgs["fast"].TRAINER.DPL.SEARCH
    other = [k for k in paper if k not in LOOP_KEYS and paper[k] != fast[k]]
    if other or cfgs["paper"].OPTIM != cfgs["fast"].OPTIM:
        raise SystemExit(f"{CONFIGS['fast'][1]}.yaml differs from {CONFIGS['paper'][1]}.yaml beyond "
                         f"{LOOP_KEYS}: {other or 'OPTIM'}; this benchmark assumes it does not.")
    return cfgs


def fast_epoch_ratio(path: str, fast_cfg, train_epochs: int) -> tuple:
    """(epochs the fast loop runs / train epochs, how that was found)."""
    s = fast_cfg.TRAINER.DPL.SEARCH
    try:
        data = json.loads(Path(path).read_text())
        st = data["settings"]
        # Runs written before the labels were renamed call the fast variant "new".
        label = "fast" if "fast" in data["epochs_run"] else "new"
        epochs = data["epochs_run"][label]
        runs = [r["epochs_run"] for r in data.get("runs", []) if r.get("variant") == label]
        if runs and all(e == st["min_epochs"] for e in runs):
            epochs_note = f", every one of its {len(runs)} runs stopped at MIN_EPOCHS {st['min_epochs']}"
        else:
            epochs_note = ""
        same = (st["patience"], st["min_epochs"], st["alpha_every"]) == (s.PATIENCE, s.MIN_EPOCHS, s.ALPHA_EVERY)
        note = "" if same else (f"; NOTE: measured with PATIENCE {st['patience']}, MIN_EPOCHS "
                                f"{st['min_epochs']}, ALPHA_EVERY {st['alpha_every']}, not this config's")
        return float(epochs) / st["train_epochs"], (
            f"measured: the fast search ran {epochs:.1f} epochs on average (of {st['search_epochs']}"
            f"{epochs_note}) vs {st['train_epochs']} train epochs in {Path(path).name}{note}")
    except (OSError, KeyError, ValueError) as err:
        first = max(s.PATIENCE + 1, s.MIN_EPOCHS)
        return first / train_epochs, (
            f"expected: the soonest the fast loop can stop, epoch {first}, / {train_epochs} train "
            f"epochs (no quality JSON: {type(err).__name__}); it may run up to {fast_cfg.OPTIM.MAX_EPOCH}")


def spread(values: list) -> str:
    return f"{min(values):.2f}–{max(values):.2f}" if values else "derived"


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--quick", action="store_true", help="3 interleaved pairs and 1 repeat of the parts")
    ap.add_argument("--pairs", type=int, default=None, help="interleaved step pairs (default 5, >= 3)")
    ap.add_argument("--repeats", type=int, default=None, help="repeats of the parts (default 3)")
    ap.add_argument("--device", default="cpu")
    ap.add_argument("--direct-1000", action="store_true", help="measure C = 1000 (default on CUDA)")
    ap.add_argument("--quality-json", default=str(REPO / "benchmarks" / "results" / "search_quality.json"))
    ap.add_argument("--threads", type=int, default=None)
    args = ap.parse_args(argv)
    if args.threads:
        torch.set_num_threads(args.threads)
    device = torch.device(args.device)
    repeats = args.repeats or (1 if args.quick else 3)
    pairs = args.pairs or (3 if args.quick else 5)
    if pairs < 3:
        ap.error("--pairs must be at least 3 (the step ratio is the median of the pairs' ratios)")
    cfgs = load_cfgs()
    cfg = cfgs["paper"]
    s = cfg.TRAINER.DPL.SEARCH
    mode = s.UPDATE_MODE
    loops = {"paper": int(s.ALPHA_EVERY), "fast": int(cfgs["fast"].TRAINER.DPL.SEARCH.ALPHA_EVERY)}
    clip = random_init_clip("ViT-B/16", device=str(device))
    print(f"torch {torch.__version__}, {device}, {torch.get_num_threads()} threads, fp32, batch "
          f"{BATCH}, random-init ViT-B/16; steps: median of {pairs} interleaved pairs, parts: median of "
          f"{repeats}; search: options {list(s.TEXT_OPTIONS)}/{list(s.VISION_OPTIONS)}, α batch "
          f"{s.VAL_BATCH_SIZE}, {mode}, {s.IMPL}, ALPHA_EVERY {loops['paper']} "
          f"({CONFIGS['paper'][1]}.yaml) / {loops['fast']} ({CONFIGS['fast'][1]}.yaml); train: Fig. 2 "
          "Caltech101 configuration", flush=True)

    results = {}
    direct = args.direct_1000 or device.type == "cuda"
    for classes in (100, 1000):
        for truncate in (True, False):
            if classes == 1000 and not direct:
                results[(classes, truncate)] = {
                    st: scale_classes(results[(100, truncate)][st], 10.0) for st in ("search", "train")}
                continue
            names = class_names(classes)
            cut = results.get((classes, True), {})
            r = {st: measure_stage(clip, names, cfg, device, repeats, st == "search", truncate, cut.get(st))
                 for st in ("search", "train")}
            if truncate:  # the steps, interleaved; before truncation they follow from the text passes
                steps = interleaved_steps(clip, names, cfg, device, pairs)
                r["search"].update(step_alpha=statistics.median(steps["alpha"]),
                                   step_prompt=statistics.median(steps["prompt"]), pairs=steps)
                r["train"].update(step=statistics.median(steps["train"]), pairs=steps)
            results[(classes, truncate)] = r
            print(f"  measured C={classes} {'truncated' if truncate else 'full 77'}", flush=True)

    rows, ratios = [], {}
    for (classes, truncate), r in results.items():
        se, tr = r["search"], r["train"]
        t_step = tr["step"]
        cells = []
        for loop, k in loops.items():
            per_pair = pair_ratios(se["pairs"], k) if se.get("pairs") else []
            ratio = statistics.median(per_pair) if per_pair else search_step(se, k, mode) / t_step
            ratios[(classes, truncate, loop)] = (ratio, per_pair)
            cells.append((search_step(se, k, mode), ratio, spread(per_pair)))
        s_text, s_img = search_parts(se, loops["paper"], mode)
        peak = ""
        if se.get("peak"):
            peak = f" | {se['peak'] / 2**30:.2f} / {tr['peak'] / 2**30:.2f}"
        rows.append(f"| {classes} | {se['tokens']} | {cells[0][0]:.2f} | {cells[1][0]:.2f} | {t_step:.2f} | "
                    f"{cells[0][1]:.2f} ({cells[0][2]}) | {cells[1][1]:.2f} ({cells[1][2]}) | "
                    f"{100 * s_text / (s_text + s_img):.0f} % | "
                    f"{100 * tr['text'] / (tr['text'] + tr['image']):.0f} % | "
                    f"{se['mem_step'] / 2**30:.2f} | {tr['mem_step'] / 2**30:.2f}{peak} |")
    print("\n| classes | text tokens | search step s, paper loop | search step s, fast loop | train step s "
          "| step ratio paper (pair min–max) | step ratio fast (pair min–max) | text share search (paper) "
          "| text share train | search saved GiB | train saved GiB"
          + (" | CUDA peak GiB search / train |" if device.type == "cuda" else " |"))
    print("|---|---|---|---|---|---|---|---|---|---|---|" + ("---|" if device.type == "cuda" else ""))
    print("\n".join(rows))
    k = loops["paper"]
    for classes in (100, 1000):
        cut, full = results[(classes, True)], results[(classes, False)]
        print(f"C={classes}: truncation {full['search']['tokens']} -> {cut['search']['tokens']} "
              f"tokens: search step (paper loop) "
              f"{search_step(full['search'], k, mode) / search_step(cut['search'], k, mode):.2f}x "
              f"faster, search saved memory {full['search']['mem_step'] / cut['search']['mem_step']:.2f}x "
              f"smaller; text pass {full['search']['text'] / cut['search']['text']:.2f}x faster")
    if not direct:
        print("C=1000 rows derived from C=100 (text parts x 10; exact, per-class text passes); "
              "--direct-1000 measures them.")
    print("Rows marked 'derived' have no pairs of their own: the truncated steps plus the text-pass "
          "difference (77 tokens) or the text parts x 10 (C = 1000).")
    train_epochs = cfgs["train"].OPTIM.MAX_EPOCH
    epoch_ratios = {
        "paper": (cfg.OPTIM.MAX_EPOCH / train_epochs,
                  f"configured: all {cfg.OPTIM.MAX_EPOCH} search epochs / {train_epochs} train epochs"),
        "fast": fast_epoch_ratio(args.quality_json, cfgs["fast"], train_epochs),
    }
    for loop in loops:
        print(f"epoch ratio {loop} loop {epoch_ratios[loop][0]:.2f} ({epoch_ratios[loop][1]})")
    print("step ratios at C=100 after truncation; R spread = the pairs' min–max step ratio x the epoch ratio")
    for loop in loops:
        (ratio, per_pair), e_ratio = ratios[(100, True, loop)], epoch_ratios[loop][0]
        print(f"R {loop} loop ({CONFIGS[loop][1]}.yaml) = {ratio:.2f} x {e_ratio:.2f} = {ratio * e_ratio:.2f} "
              f"(whole search / whole train stage; pairs {min(per_pair) * e_ratio:.2f}–"
              f"{max(per_pair) * e_ratio:.2f})")
    return 0


if __name__ == "__main__":
    sys.exit(main())
