"""One MNIST epoch (LeNet, batch 32): our loop against a torchvision DataLoader loop, and the cost
of CDR + AUX on each engine.

Both loops do the same model work: LeNet, cross-entropy, SGD (lr 0.01, momentum 0.9, wd 1e-3),
one pass over the 54,000 training examples in batches of 32, then accuracy on the 6,000
validation and 10,000 test images. They differ only in how data reaches the model:

- ours: the dataset is one normalised tensor on the device; batches are drawn by index;
- torchvision: ``datasets.MNIST`` with ``ToTensor`` + ``Normalize`` per example (PIL), collated
  by a ``DataLoader`` (shuffle), the way the published CDR code feeds its model.

    pytest bench/test_loop_speed.py --benchmark-only

``test_paired_epochs`` times two configurations in alternating epochs: ``cdr_aux`` against
``sgd``, both fused, is what CDR and AUX cost on top of plain SGD (target: at most 1.1x); ``sgd``
fused against ``sgd`` on the reference engine is what the fused engine costs plain SGD (target: no
slower). Read those paired ratios; the 3-round medians of single epochs are not paired. All are
printed at the end of the session and recorded in bench/RESULTS.md.
"""

from __future__ import annotations

import gzip
import statistics

import pytest
import torch
import torch.nn.functional as F

from cdr_fast.models import LeNet
from cdr_fast.training import Trainer, TrainConfig

from conftest import record_median

ROUNDS = 3


@pytest.fixture(scope="module")
def torchvision_root(tmp_path_factory, mnist_dir):
    """torchvision's layout (<root>/MNIST/raw/, uncompressed), built from the shared files."""
    root = tmp_path_factory.mktemp("tv")
    raw = root / "MNIST" / "raw"
    raw.mkdir(parents=True)
    for gz in mnist_dir.glob("*.gz"):
        (raw / gz.stem).write_bytes(gzip.decompress(gz.read_bytes()))
    return root


@pytest.mark.parametrize("engine", ["reference", "auto"])
@pytest.mark.parametrize("method", ["sgd", "cdr_aux"])
def test_our_epoch(benchmark, mnist_dir, method, engine):
    config = TrainConfig(method=method, dataset="mnist", data_dir=str(mnist_dir), engine=engine, epochs=ROUNDS + 1)
    trainer = Trainer(config, None, progress=False, log=lambda s: None)

    def epoch():
        trainer.train_epoch()
        trainer.epoch += 1

    benchmark.pedantic(epoch, rounds=ROUNDS, iterations=1, warmup_rounds=0)
    name = f"ours_{method}" if engine == "reference" else f"ours_{method}_fused"
    record_median(benchmark, f"epoch {name}")


@pytest.mark.parametrize("workers", [0, 2])
def test_torchvision_dataloader_epoch(benchmark, torchvision_root, workers):
    import torchvision
    from torchvision import transforms

    tf = transforms.Compose([transforms.ToTensor(), transforms.Normalize((0.1307,), (0.3081,))])
    full = torchvision.datasets.MNIST(str(torchvision_root), train=True, transform=tf, download=False)
    test = torchvision.datasets.MNIST(str(torchvision_root), train=False, transform=tf, download=False)
    train_set, val_set = torch.utils.data.random_split(full, [54000, 6000], torch.Generator().manual_seed(0))
    loader = lambda ds, shuffle, bs: torch.utils.data.DataLoader(  # noqa: E731
        ds, batch_size=bs, shuffle=shuffle, num_workers=workers, persistent_workers=workers > 0)
    train_loader, val_loader, test_loader = loader(train_set, True, 32), loader(val_set, False, 1024), loader(test, False, 1024)
    torch.manual_seed(0)
    model = LeNet()
    opt = torch.optim.SGD(model.parameters(), lr=0.01, momentum=0.9, weight_decay=1e-3)

    def epoch():
        model.train()
        for x, y in train_loader:
            opt.zero_grad()
            F.cross_entropy(model(x), y).backward()
            opt.step()
        model.eval()
        with torch.no_grad():
            for dl in (val_loader, test_loader):
                sum((model(x).argmax(1) == y).sum().item() for x, y in dl)

    benchmark.pedantic(epoch, rounds=ROUNDS, iterations=1, warmup_rounds=0)
    record_median(benchmark, f"epoch torchvision_workers{workers}")


# name -> (baseline, variant), each (method, engine); the ratio is variant / baseline.
PAIRS = {
    "cdr_aux_fused/sgd_fused": (("sgd", "auto"), ("cdr_aux", "auto")),  # what CDR + AUX cost (target 1.1x)
    "sgd_fused/sgd_reference": (("sgd", "reference"), ("sgd", "auto")),  # the fused engine on plain SGD (target 1x)
}


@pytest.mark.parametrize("pair", PAIRS)
def test_paired_epochs(benchmark, mnist_dir, pair):
    """Two configurations timed in alternating epochs, so that drift in the machine's speed (large on
    shared VMs) hits both alike; reports the median of the per-pair ratios."""
    import time

    trainers = [Trainer(TrainConfig(method=method, dataset="mnist", data_dir=str(mnist_dir), engine=engine,
                                    epochs=2 * ROUNDS + 3), None, progress=False, log=lambda s: None)
                for method, engine in PAIRS[pair]]
    ratios = []

    def one_pair():
        seconds = []
        for trainer in trainers:
            start = time.perf_counter()
            trainer.train_epoch()
            trainer.epoch += 1
            seconds.append(time.perf_counter() - start)
        ratios.append(seconds[1] / seconds[0])

    one_pair()  # warm-up pair, not counted: the first epochs build the flat buffers and load the C library
    ratios.clear()
    benchmark.pedantic(one_pair, rounds=2 * ROUNDS, iterations=1, warmup_rounds=0)
    ratios.sort()
    median = statistics.median(ratios)
    benchmark.extra_info["ratio_median"] = median
    record_median(benchmark, f"epoch pair {pair}", ratio=median, ratios=ratios)
