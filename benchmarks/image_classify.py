"""Training speed of `lmforge train experiment=image_classify` against a hand-written PyTorch loop of the
same model, batch and data: the toolkit's overhead on images, and whether data loading keeps up.

Both sides train resnet_small (same seed) with AdamW (lr 3e-3, weight decay 0.05 on matrices and
kernels only) and the cosine-warmup schedule on the generated digit images (32x32, batch 64, random
resized crops), prepared once into a shared cache before anything is timed.

* lmforge side: the real CLI in a subprocess, `lmforge train experiment=image_classify
  trainer.max_steps=N test=false logger=csv` with its default callbacks, plus the step clock
  (benchmarks/_clock.py) as one more callback.
* plain side: in this process, lmforge's own training `ImageSet` (the same decoded images and
  augmentation) in a bare DataLoader over a seeded permutation, the same HF ResNet class, and a loop of
  forward / cross-entropy / backward / step / zero_grad / sched.step, the clock's `step()` after each.
* data alone: the same DataLoader iterated with no model, images/s (far above the training rates:
  loading is not the bottleneck).

Rates are images/s over steps W+2..N (start-up and the first W+1 steps left out), by one clock. The
sides alternate (lmforge, plain, ...); medians and their ratio are printed (< 1: lmforge is slower).

    python benchmarks/image_classify.py                    # 3 pairs of 40 steps
    python benchmarks/image_classify.py --repeats 5 --steps 60 --model vit_tiny
"""

from __future__ import annotations

import argparse
import math
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _clock import StepClock  # noqa: E402
from _common import clean_up, lmforge_cmd, machine, median, run_checked, spread  # noqa: E402

LR, WEIGHT_DECAY, WARMUP, MIN_LR_RATIO, SEED, BATCH = 3e-3, 0.05, 20, 0.1, 42, 64


def lmforge_run(args, cache: Path, run_dir: Path) -> float:
    stamps = run_dir.parent / f"{run_dir.name}-clock.json"
    run_checked(lmforge_cmd() + [
        "train", "experiment=image_classify", f"model={args.model}", f"trainer.max_steps={args.steps}",
        f"paths.cache_dir={cache}", f"data.batch_size={BATCH}", "test=false", "logger=csv", f"seed={SEED}",
        "print_config=false", "+callbacks.step_clock._target_=_clock.lightning_clock",
        f"+callbacks.step_clock.path={stamps}", f"hydra.run.dir={run_dir}", *args.override], cache)
    return StepClock.load(stamps).rate(args.warmup)


def train_set(cache: Path):
    from lmforge.data.image_folder import ImageFolderDataModule

    dm = ImageFolderDataModule(cache_dir=str(cache), batch_size=BATCH, crop_scale=(0.6, 1.0), hflip=0.0)
    dm.run_seed = SEED
    dm.setup()
    return dm._sets["train"], dm.dims


def loader(dataset, steps: int):
    import torch
    from torch.utils.data import DataLoader

    order = torch.randperm(len(dataset), generator=torch.Generator().manual_seed(SEED)).tolist()
    indices = [epoch * len(dataset) + i for epoch in range(math.ceil(steps * BATCH / len(dataset)) + 1)
               for i in order][: steps * BATCH]
    return DataLoader(dataset, batch_size=BATCH, sampler=indices)


def plain_run(args, dataset, dims) -> float:
    import torch
    import torch.nn.functional as F

    from lmforge.models import image_classifier

    torch.manual_seed(SEED)
    model = getattr(image_classifier, args.model)(num_classes=dims["num_classes"], labels=dims["labels"],
                                                  image_size=dims["image_size"]).train()
    params = [p for p in model.parameters() if p.requires_grad]
    opt = torch.optim.AdamW([{"params": [p for p in params if p.ndim >= 2], "weight_decay": WEIGHT_DECAY},
                             {"params": [p for p in params if p.ndim < 2], "weight_decay": 0.0}], lr=LR)

    def factor(step: int) -> float:
        if step < WARMUP:
            return (step + 1) / WARMUP
        progress = min(1.0, (step - WARMUP) / max(1, args.steps - WARMUP))
        return MIN_LR_RATIO + (1 - MIN_LR_RATIO) * 0.5 * (1 + math.cos(math.pi * progress))

    sched = torch.optim.lr_scheduler.LambdaLR(opt, factor)
    clock = StepClock()
    for batch in loader(dataset, args.steps):
        F.cross_entropy(model(pixel_values=batch["pixel_values"]).logits, batch["labels"]).backward()
        opt.step()
        opt.zero_grad(set_to_none=True)
        sched.step()
        clock.step(len(batch["labels"]))
    return clock.rate(args.warmup)


def data_only(args, dataset) -> float:
    t0, n = time.perf_counter(), 0
    for batch in loader(dataset, args.steps):
        n += len(batch["labels"])
    return n / (time.perf_counter() - t0)


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--repeats", type=int, default=3, help="A/B pairs (default 3)")
    p.add_argument("--steps", type=int, default=40, help="optimizer steps per run (default 40)")
    p.add_argument("--warmup", type=int, default=5, help="first steps left out of the rate (default 5)")
    p.add_argument("--model", default="resnet_small", help="resnet_small | convnext_tiny | vit_tiny")
    p.add_argument("override", nargs="*", help="extra Hydra overrides for the lmforge side")
    p.add_argument("--keep", action="store_true", help="keep the temp dir (runs, cache) and print it")
    args = p.parse_args()
    tmp = Path(tempfile.mkdtemp(prefix="lmforge-bench-images-"))
    cache = tmp / "cache"
    t0 = time.perf_counter()
    dataset, dims = train_set(cache)
    print(f"machine: {machine()}")
    print(f"data: {len(dataset)} generated 32x32 training images, {dims['num_classes']} classes (prepared in "
          f"{time.perf_counter() - t0:.1f} s); model {args.model}, batch {BATCH}, {args.steps} steps, rate over "
          f"steps {args.warmup + 2}..{args.steps}, {args.repeats} interleaved pairs", flush=True)
    lm, plain, loading = [], [], []
    for i in range(args.repeats):
        lm.append(lmforge_run(args, cache, tmp / f"run{i}"))
        print(f"[{i + 1}/{args.repeats}] lmforge train: {lm[-1]:8,.1f} images/s", flush=True)
        plain.append(plain_run(args, dataset, dims))
        print(f"[{i + 1}/{args.repeats}] plain loop:    {plain[-1]:8,.1f} images/s", flush=True)
        loading.append(data_only(args, dataset))
        print(f"[{i + 1}/{args.repeats}] data alone:    {loading[-1]:8,.1f} images/s", flush=True)
    ratios = [a / b for a, b in zip(lm, plain)]
    print()
    print(f"lmforge train images/s: {spread(lm)}")
    print(f"plain loop images/s:    {spread(plain)}")
    print(f"data loading alone:     {spread(loading)} images/s")
    print(f"ratio of medians lmforge/plain: {median(lm) / median(plain):.3f}   per-pair ratios: "
          f"{', '.join(f'{r:.3f}' for r in ratios)}")
    clean_up(tmp, args.keep)


if __name__ == "__main__":
    main()
