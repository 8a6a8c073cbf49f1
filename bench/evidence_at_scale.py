"""The label evidence at ImageNet's size: what ``EvidenceRecorder`` costs a training step, and what
it holds on the device, at 1.28M examples x 1,000 classes (synthetic data: the cost does not
depend on the values).

A step is a forward and backward pass and an SGD step of a small network on one fixed batch
(``--model``, batch ``--batch-size``); the recorded step also calls ``record`` with that batch's
logits and the next rows of a fixed random order of the 1.28M examples. Rounds alternate plain and
recorded steps (``--steps`` each, timed on the wall clock with the device synchronised at the end),
and the cost is the median of the per-round ratios; ``record`` is also timed by itself (its
share of the plain step is the steadier number where steps are noisy, as on a shared CPU). On a GPU the readings go to host memory
(storage "auto"): the device holds only the batch in flight, and the fold runs on the CPU while
the GPU works.

    python bench/evidence_at_scale.py --device cuda        # bench/gpu_check.py runs it too
    python bench/evidence_at_scale.py --device cpu --examples 1280000 --classes 1000
"""

from __future__ import annotations

import argparse
import json
import resource
import statistics
import sys
import time
from pathlib import Path

import torch
import torch.nn.functional as F

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from cdr_fast.detection import EvidenceRecorder  # noqa: E402
from cdr_fast.models import build_model  # noqa: E402


def sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def measure(device: torch.device, examples: int, classes: int, batch: int = 256, model: str = "resnet18",
            shape: tuple[int, ...] = (3, 32, 32), rounds: int = 5, steps: int = 20) -> dict:
    """The recorder's device bytes and its cost per step (see the module's docstring)."""
    gen = torch.Generator().manual_seed(0)
    torch.manual_seed(0)
    net = build_model(model, classes, shape).to(device)
    opt = torch.optim.SGD(net.parameters(), lr=0.01, momentum=0.9)
    x = torch.randn(batch, *shape, generator=gen).to(device)
    y = torch.randint(0, classes, (batch,), generator=gen).to(device)
    cuda = device.type == "cuda"
    before = torch.cuda.memory_allocated(device) if cuda else 0
    t0 = time.perf_counter()
    recorder = EvidenceRecorder(examples, classes, device, labels=torch.randint(0, classes, (examples,), generator=gen))
    setup_s = time.perf_counter() - t0
    allocated = torch.cuda.memory_allocated(device) - before if cuda else recorder.device_bytes()
    order = torch.randperm(examples, generator=gen).to(device)
    at = [0]

    def step(record: bool) -> None:
        logits = net(x)
        loss = F.cross_entropy(logits, y)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        if record:
            i = at[0] % (examples // batch)
            at[0] += 1
            recorder.record(order[i * batch:(i + 1) * batch], logits)

    def timed(record: bool) -> float:
        sync(device)
        t = time.perf_counter()
        for _ in range(steps):
            step(record)
        sync(device)
        return (time.perf_counter() - t) / steps

    for record in (False, True):  # warm-up: kernels chosen, staging buffers made
        timed(record)
    plain, recorded = [], []
    for _ in range(rounds):
        plain.append(timed(False))
        recorded.append(timed(True))
    recorder.flush()
    logits = net(x).detach()
    if cuda:  # the recorder's own peak: record() alone, beside the logits it is given
        sync(device)
        torch.cuda.reset_peak_memory_stats(device)
        peak_from = torch.cuda.memory_allocated(device)
    alone = []  # record() by itself, synchronised: the host fold is in it on every path
    for _ in range(rounds):
        sync(device)
        t = time.perf_counter()
        for _ in range(steps):
            i = at[0] % (examples // batch)
            at[0] += 1
            recorder.record(order[i * batch:(i + 1) * batch], logits)
        recorder.flush()
        sync(device)
        alone.append((time.perf_counter() - t) / steps)
    ratios = sorted(r / p for p, r in zip(plain, recorded))
    return {
        "examples": examples, "classes": classes, "batch": batch, "model": model, "input": list(shape),
        "device": str(device), "storage": recorder.storage,
        "readings_bytes": sum(t.numel() * t.element_size() for t in (recorder.probs_sum, recorder.probs_ema,
                                                                      recorder.margin_sum, recorder.visits)),
        "recorder_device_bytes": int(allocated),
        "recording_peak_device_bytes": (int(torch.cuda.max_memory_allocated(device) - peak_from) if cuda else None),
        "setup_s": setup_s,
        "plain_step_ms": statistics.median(plain) * 1e3, "recorded_step_ms": statistics.median(recorded) * 1e3,
        "cost_ratio": statistics.median(ratios), "cost_ratios": ratios,
        "record_ms": statistics.median(alone) * 1e3,
        "record_share_of_plain_step": statistics.median(alone) / statistics.median(plain),
        "peak_rss_gb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 2**20,
    }


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    p.add_argument("--examples", type=int, default=1_280_000)
    p.add_argument("--classes", type=int, default=1000)
    p.add_argument("--batch-size", type=int, default=256)
    p.add_argument("--model", default="resnet18")
    p.add_argument("--image-size", type=int, default=32)
    p.add_argument("--rounds", type=int, default=5)
    p.add_argument("--steps", type=int, default=20)
    args = p.parse_args()
    out = measure(torch.device(args.device), args.examples, args.classes, args.batch_size, args.model,
                  (3, args.image_size, args.image_size), args.rounds, args.steps)
    print(json.dumps(out, indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())
