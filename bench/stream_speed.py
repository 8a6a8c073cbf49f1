"""Streaming a folder of photos: our ``--stream`` run (CDR+AUX) against a plain torchvision
``ImageFolder`` + ``DataLoader`` loop (SGD), on the same photos with the same worker count.

The photos: the first ``--photos`` MNIST training digits (and 1,000 test digits), each tinted by a
random colour, upscaled to 64 x 64 RGB and saved as JPEG (quality 90) in class folders, made once
under ``--root``. Both loops resize them to 28 x 28 (bilinear, antialiased: PIL's resize) and
normalise them, train LeNet (3 channels) with batch ``--batch-size`` (lr 0.01, momentum 0.9, wd
1e-3) over every training photo in shuffled order, and decode on ``--workers`` DataLoader
processes. Ours also keeps the AUX table, masks with CDR (tau 0.2) and records the label evidence.

Rounds alternate (theirs, ours); each round is one epoch of each. Images per second are counted
over the training pass only (ours: the epoch's ``train_time_s``, without its test pass), and the
ratio ours / theirs is the median of the per-round ratios.

    python bench/stream_speed.py --root /tmp/photos --photos 20000 --workers 2 --rounds 4
"""

from __future__ import annotations

import argparse
import statistics
import sys
import time
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from cdr_fast.data import load_dataset  # noqa: E402
from cdr_fast.models import LeNet  # noqa: E402
from cdr_fast.training import Trainer, TrainConfig  # noqa: E402

SIZE = 28


def make_photos(root: Path, photos: int, seed: int = 0) -> None:
    """MNIST digits as tinted 64 x 64 RGB JPEGs in root/train/<digit>/ and root/test/<digit>/."""
    from PIL import Image

    if (root / "done").is_file():
        return
    mnist = load_dataset("mnist", REPO.parent / "shared" / "data" / "mnist")
    rng = np.random.default_rng(seed)
    mean, std = (float(v[0]) for v in mnist.normalisation)
    for split, images, labels, count in (("train", mnist.train_images, mnist.train_labels, photos),
                                         ("test", mnist.test_images, mnist.test_labels, 1000)):
        grey = ((images[:count, 0].numpy() * std + mean) * 255).clip(0, 255)
        for i, (pixels, label) in enumerate(zip(grey, labels[:count].tolist())):
            tint = rng.uniform(0.3, 1.0, 3)
            rgb = (pixels[..., None] * tint + rng.uniform(0, 40, 3)).clip(0, 255).astype(np.uint8)
            folder = root / split / str(label)
            folder.mkdir(parents=True, exist_ok=True)
            Image.fromarray(rgb).resize((64, 64), Image.Resampling.BILINEAR).save(folder / f"{i:05d}.jpg", quality=90)
    (root / "done").write_text("ok\n")


class TorchvisionLoop:
    """What a user writes: ImageFolder, Resize + ToTensor + Normalize, a shuffling DataLoader, SGD."""

    def __init__(self, root: Path, workers: int, batch_size: int, normalisation) -> None:
        from torchvision import datasets, transforms

        mean, std = normalisation
        transform = transforms.Compose([transforms.Resize((SIZE, SIZE)), transforms.ToTensor(),
                                        transforms.Normalize(mean, std)])
        self.data = datasets.ImageFolder(str(root / "train"), transform=transform)
        self.loader = torch.utils.data.DataLoader(self.data, batch_size=batch_size, shuffle=True, num_workers=workers)
        torch.manual_seed(0)
        self.model = LeNet(3, 10)
        self.opt = torch.optim.SGD(self.model.parameters(), lr=0.01, momentum=0.9, weight_decay=1e-3)

    def epoch(self) -> float:
        """Images per second over one training pass."""
        self.model.train()
        t0 = time.perf_counter()
        for x, y in self.loader:
            loss = F.cross_entropy(self.model(x), y)
            self.opt.zero_grad(set_to_none=True)
            loss.backward()
            self.opt.step()
        return len(self.data) / (time.perf_counter() - t0)


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--root", type=Path, default=Path("/tmp/cdr-fast-photos"))
    p.add_argument("--photos", type=int, default=20_000)
    p.add_argument("--workers", type=int, default=2)
    p.add_argument("--batch-size", type=int, default=64)
    p.add_argument("--rounds", type=int, default=4)
    args = p.parse_args()
    make_photos(args.root, args.photos)
    config = TrainConfig(dataset="folder", data_dir=str(args.root), image_size=SIZE, model="lenet", method="cdr_aux",
                         noise_type="none", noise_rate=0.0, tau=0.2, val_fraction=0.0, batch_size=args.batch_size,
                         epochs=args.rounds, milestones=[], stream=True, workers=args.workers)
    t0 = time.perf_counter()
    ours = Trainer(config, None, progress=False, log=lambda line: None)
    start_s = time.perf_counter() - t0
    theirs = TorchvisionLoop(args.root, args.workers, args.batch_size, ours.data.normalisation)
    n = ours.data.train_x.shape[0]
    rows = []
    for r in range(args.rounds):
        theirs_ips = theirs.epoch()
        ours_ips = n / ours.train_epoch()["train_time_s"]
        rows.append((theirs_ips, ours_ips))
        print(f"round {r + 1}: torchvision {theirs_ips:7.0f} images/s  ours (CDR+AUX, streamed) {ours_ips:7.0f} "
              f"images/s  ratio {ours_ips / theirs_ips:.3f}", flush=True)
    ratios = sorted(o / t for t, o in rows)
    print(f"{n} photos, {args.workers} workers, batch {args.batch_size}, {torch.get_num_threads()} threads; our "
          f"start (header scan and normalisation over {min(n, 10_000)} photos): {start_s:.1f} s")
    print(f"median images/s: torchvision {statistics.median(t for t, _ in rows):.0f}, ours "
          f"{statistics.median(o for _, o in rows):.0f}; ours / torchvision, median of rounds: "
          f"{statistics.median(ratios):.3f} ({', '.join(f'{v:.3f}' for v in ratios)})")
    return 0


if __name__ == "__main__":
    sys.exit(main())
