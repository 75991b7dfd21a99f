"""Seconds per training iteration of the authors' PyTorch FastGAN, timed like `train_step.py`.

    /path/to/torch-venv/bin/python benchmarks/reference_step.py --reference-dir ~/FastGAN-pytorch \
        --resolution 256 --batch-size 8 --recon-loss lpips --threads 2

Not meant to be run alone: `train_step.py --reference-dir DIR --reference-python PY` runs it in
the same invocation as this project's settings, interleaved over rounds, so that the ratio of the
two is measured on one machine under one load.

What it runs: the reference's own `Generator` and `Discriminator` (imported from `models.py` and
`diffaug.py` of a checkout of odegeasslbc/FastGAN-pytorch that you provide; the reference is
GPL-3.0 and none of its code is in this repository) through one iteration of its training loop as
described in the reference's documentation: G forward, DiffAugment of the real batch and of each
fake scale, D on the augmented reals with the three decoders' reconstruction losses summed over
the batch, D on the detached fakes, one Adam step of D, G's loss through D, one Adam step of G,
the EMA of G's parameters (decay 0.999). The reference cannot run on a CPU unmodified (CUDA is
hard-coded), hence this driver. LPIPS is the `lpips` package (the library the reference vendors)
with random VGG16 weights (`pnet_rand=True`), as `train_step.py` times ours: the same work without
the download. `--recon-loss l1` replaces LPIPS by the per-sample mean absolute error, summed over
the batch, as this project's `l1` option does.

Needs a Python with torch, torchvision and lpips (`pip install torch torchvision lpips`).
"""

from __future__ import annotations

import argparse
import json
import random
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

from machine import peak_rss_mib  # noqa: E402

NZ = 256
POLICY = "color,translation"
EMA_DECAY = 0.999


def crop_quadrant(images, part: int):
    """The quadrant `part` (0 top-left, 1 top-right, 2 bottom-left, 3 bottom-right), NCHW."""
    half = images.shape[2] // 2
    rows = slice(0, half) if part in (0, 1) else slice(half, None)
    cols = slice(0, half) if part in (0, 2) else slice(half, None)
    return images[:, :, rows, cols]


class ReferenceStep:
    """One training iteration of the reference, on a fixed random batch."""

    def __init__(self, args: argparse.Namespace):
        import torch
        import torch.optim as optim

        sys.path.insert(0, str(Path(args.reference_dir).resolve()))
        from diffaug import DiffAugment  # noqa: E402 (the reference's checkout)
        from models import Discriminator, Generator, weights_init  # noqa: E402

        self.torch, self.augment = torch, lambda x: DiffAugment(x, policy=POLICY)
        self.netG = Generator(ngf=args.ngf, nz=NZ, im_size=args.resolution)
        self.netD = Discriminator(ndf=args.ndf, im_size=args.resolution)
        self.netG.apply(weights_init)
        self.netD.apply(weights_init)
        self.ema = [p.detach().clone() for p in self.netG.parameters()]
        self.optG = optim.Adam(self.netG.parameters(), lr=2e-4, betas=(0.5, 0.999))
        self.optD = optim.Adam(self.netD.parameters(), lr=2e-4, betas=(0.5, 0.999))
        self.distance = self._distance(args.recon_loss)
        self.real = torch.rand(args.batch_size, 3, args.resolution, args.resolution) * 2 - 1

    def _distance(self, kind: str):
        torch = self.torch
        if kind == "lpips":
            import lpips

            metric = lpips.LPIPS(net="vgg", pnet_rand=True, verbose=False).eval()
            return lambda pred, target: metric(pred, target).sum()
        if kind == "l1":
            return lambda pred, target: (pred - target).abs().mean(dim=(1, 2, 3)).sum()
        return lambda pred, target: ((pred - target) ** 2).mean(dim=(1, 2, 3)).sum()

    def _recon(self, recs, real):
        interpolate = self.torch.nn.functional.interpolate
        rec_all, rec_small, rec_part, part = recs
        return (self.distance(rec_all, interpolate(real, rec_all.shape[2]))
                + self.distance(rec_small, interpolate(real, rec_small.shape[2]))
                + self.distance(rec_part, interpolate(crop_quadrant(real, part),
                                                      rec_part.shape[2])))

    def __call__(self) -> float:
        torch, relu = self.torch, self.torch.nn.functional.relu
        noise = torch.randn(self.real.shape[0], NZ)
        fakes = self.netG(noise)
        real = self.augment(self.real)
        fakes = [self.augment(f) for f in fakes]

        self.netD.zero_grad()
        part = random.randint(0, 3)
        pred, (rec_all, rec_small, rec_part) = self.netD(real, "real", part)
        err_real = (relu(torch.rand_like(pred) * 0.2 + 0.8 - pred).mean()
                    + self._recon((rec_all, rec_small, rec_part, part), real))
        err_real.backward()
        pred = self.netD([f.detach() for f in fakes], "fake")
        relu(torch.rand_like(pred) * 0.2 + 0.8 + pred).mean().backward()
        self.optD.step()

        self.netG.zero_grad()
        err_g = -self.netD(fakes, "fake").mean()
        err_g.backward()
        self.optG.step()
        with torch.no_grad():
            for p, avg in zip(self.netG.parameters(), self.ema):
                avg.mul_(EMA_DECAY).add_((1 - EMA_DECAY) * p)
        return float(err_g.detach())


def measure(args: argparse.Namespace) -> dict:
    import numpy as np
    import torch

    if args.threads:
        torch.set_num_threads(args.threads)
    torch.manual_seed(0)
    random.seed(0)
    step = ReferenceStep(args)
    start = time.perf_counter()
    step()
    first = time.perf_counter() - start
    for _ in range(args.warmup - 1):
        step()
    times = []
    for _ in range(args.iterations):
        start = time.perf_counter()
        step()
        times.append(time.perf_counter() - start)
    return {
        "code": "pytorch-reference", "torch": torch.__version__,
        "resolution": args.resolution, "batch_size": args.batch_size, "ngf": args.ngf,
        "ndf": args.ndf, "recon_loss": args.recon_loss, "mixed_precision": "off",
        "intra_op_threads": torch.get_num_threads(), "iterations": args.iterations,
        "first_step_s": round(first, 2),
        "median_s_per_iter": round(float(np.median(times)), 3),
        "min_s_per_iter": round(float(np.min(times)), 3),
        "peak_rss_mib": round(peak_rss_mib() or 0.0, 1) or None,
    }


def parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--reference-dir", required=True,
                   help="a checkout of odegeasslbc/FastGAN-pytorch (models.py, diffaug.py)")
    p.add_argument("--resolution", type=int, default=256, choices=(256, 512, 1024))
    p.add_argument("--batch-size", type=int, default=8)
    p.add_argument("--recon-loss", default="l1", choices=("lpips", "l1", "mse"))
    p.add_argument("--ngf", type=int, default=64)
    p.add_argument("--ndf", type=int, default=64)
    p.add_argument("--threads", type=int, default=0, help="intra-op threads; 0 = torch default")
    p.add_argument("--warmup", type=int, default=2, help="untimed iterations (>= 1)")
    p.add_argument("--iterations", type=int, default=5, help="timed iterations")
    return p


if __name__ == "__main__":
    print(json.dumps(measure(parser().parse_args())))
