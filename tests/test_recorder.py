"""The evidence recorder (cdr_fast.detection.EvidenceRecorder): by hand, from a plain torch loop
(bit for bit the Trainer's evidence), across a mid-epoch state round trip; and the detector registry."""

from __future__ import annotations

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from cdr_fast import CDRSGD
from cdr_fast.detection import (DETECTORS, EMA_WEIGHT, EvidenceRecorder, get_detector, load_evidence, run_detectors)
from cdr_fast.detection.evidence import Evidence
from cdr_fast.models import build_model
from cdr_fast.training import RunFolder, Trainer, TrainConfig


def logits_of(probs: torch.Tensor) -> torch.Tensor:
    return probs.log()  # softmax(log p) = p for rows summing to 1


def test_readings_by_hand_with_an_example_left_out_of_an_epoch():
    labels = torch.tensor([0, 1, 2])
    p1 = torch.tensor([[0.6, 0.3, 0.1], [0.2, 0.5, 0.3], [0.1, 0.1, 0.8]])
    p2 = torch.tensor([[0.2, 0.7, 0.1], [0.3, 0.3, 0.4], [0.3, 0.3, 0.4]])
    r = EvidenceRecorder(3, 3, labels=labels)
    r.record([2, 0], logits_of(p1[[2, 0]]))
    r.record(torch.tensor([1]), logits_of(p1[[1]]))
    r.end_epoch()
    r.record(torch.tensor([0, 1]), logits_of(p2[[0, 1]]))  # example 2 is not visited in epoch 2
    r.end_epoch()
    mean, margin, ema = r.means()
    expected_mean = torch.stack([(p1[0] + p2[0]) / 2, (p1[1] + p2[1]) / 2, p1[2]]).double().numpy()
    np.testing.assert_allclose(mean, expected_mean, rtol=1e-6)
    expected_ema = torch.stack([(1 - EMA_WEIGHT) * p1[0] + EMA_WEIGHT * p2[0],
                                (1 - EMA_WEIGHT) * p1[1] + EMA_WEIGHT * p2[1], p1[2]]).double().numpy()
    np.testing.assert_allclose(ema, expected_ema, rtol=1e-6)
    # margins max_{j != y} p_j - p_y: epoch 1: -0.3, -0.2, -0.7; epoch 2: 0.5, 0.1 (example 2: none)
    np.testing.assert_allclose(margin, [0.1, -0.05, -0.7], rtol=1e-6)
    assert r.visits.tolist() == [2, 2, 1] and r.epochs == 2


def test_without_labels_the_margin_is_that_of_the_mean_and_the_final_reading_defaults_to_the_recent_one(tmp_path):
    p = torch.tensor([[0.6, 0.4], [0.1, 0.9]])
    r = EvidenceRecorder(2, 2)
    r.record([0, 1], logits_of(p))
    r.end_epoch()
    path = r.save(tmp_path / "run", np.array([1, 1]))
    assert path == tmp_path / "run" / "evidence.npz"
    e = load_evidence(path)
    np.testing.assert_allclose(e.margin_mean, [0.2, -0.8], rtol=1e-6)
    np.testing.assert_allclose(e.probs, e.probs_ema)
    assert e.trained.all() and e.index.tolist() == [0, 1] and 0 <= e.flag_rate <= 1  # estimated from the evidence
    assert r.save(tmp_path / "mine.npz", [1, 1]) == tmp_path / "mine.npz"


def test_bad_input_is_one_line_and_an_empty_recorder_saves():
    r = EvidenceRecorder(4, 3)
    with pytest.raises(ValueError, match=r"logits must be \(batch, 3\); got \(2, 4\)"):
        r.record([0, 1], torch.zeros(2, 4))
    with pytest.raises(ValueError, match="3 indices for 2 rows of logits"):
        r.record([0, 1, 2], torch.zeros(2, 3))
    with pytest.raises(ValueError, match="needs num_examples >= 0 and num_classes >= 2"):
        EvidenceRecorder(3, 1)
    with pytest.raises(ValueError, match=r"given_labels must be \(4,\)"):
        r.evidence([0, 1])
    empty = EvidenceRecorder(0, 3, labels=[])
    empty.record(torch.zeros(0, dtype=torch.long), torch.zeros(0, 3))
    empty.end_epoch()
    assert empty.evidence(np.zeros(0, int)).probs.shape == (0, 3)


def test_a_state_round_trip_mid_epoch_records_what_an_uninterrupted_recorder_does(fresh_seed):
    gen = torch.Generator().manual_seed(fresh_seed)
    n, m = 37, 5  # not a multiple of the batch
    labels = torch.randint(0, m, (n,), generator=gen)
    epochs = [torch.randn(n, m, generator=gen) for _ in range(3)]
    orders = [torch.randperm(n, generator=gen) for _ in range(3)]

    def feed(r, epoch, batches):
        for b in batches:
            idx = orders[epoch][b * 8:(b + 1) * 8]
            r.record(idx, epochs[epoch][idx])

    straight = EvidenceRecorder(n, m, labels=labels)
    for e in range(3):
        feed(straight, e, range(5))
        straight.end_epoch()
    first = EvidenceRecorder(n, m, labels=labels)
    feed(first, 0, range(5))
    first.end_epoch()
    feed(first, 1, range(2))
    resumed = EvidenceRecorder(n, m, labels=labels)
    resumed.load_state_dict(first.state_dict())
    feed(resumed, 1, range(2, 5))
    resumed.end_epoch()
    feed(resumed, 2, range(5))
    resumed.end_epoch()
    for key, value in straight.state_dict().items():
        assert torch.equal(value, resumed.state_dict()[key]) if isinstance(value, torch.Tensor) else \
            value == resumed.state_dict()[key], key


def test_a_plain_torch_loop_gives_the_trainers_evidence_bit_for_bit(tmp_path):
    """The Trainer uses exactly EvidenceRecorder: the same steps in a plain loop, recorded the same
    way (training visits, then each epoch's validation pass), write an identical evidence.npz."""
    config = TrainConfig(method="sgd", epochs=2, batch_size=256, engine="reference", milestones=[1])
    trainer = Trainer(config, RunFolder(tmp_path / "run"), progress=False, log=lambda s: None)
    trainer.fit()
    d = trainer.data

    torch.manual_seed(config.seed)
    model = build_model("lenet", 10, (1, 28, 28))
    opt = CDRSGD(model.parameters(), lr=config.lr, momentum=config.momentum, weight_decay=config.weight_decay,
                 engine="reference")
    sched = torch.optim.lr_scheduler.MultiStepLR(opt, config.milestones, config.gamma)
    given = torch.empty(d.num_examples, dtype=torch.long)
    given[d.train_index], given[d.val_index] = d.train_y, d.val_y
    recorder = EvidenceRecorder(d.num_examples, 10, labels=given)
    for epoch in range(config.epochs):
        model.train()
        order = torch.randperm(len(d.train_y), generator=torch.Generator().manual_seed(config.seed * 100_003 + epoch))
        for batch in order.split(config.batch_size):
            logits = model(d.train_x[batch])
            loss = F.cross_entropy(logits, d.train_y[batch])
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
            recorder.record(d.train_index[batch], logits)
        sched.step()
        model.eval()
        with torch.no_grad():  # the validation pass, in the Trainer's batches
            for i in range(0, len(d.val_y), config.eval_batch_size):
                recorder.record(d.val_index[i:i + config.eval_batch_size], model(d.val_x[i:i + config.eval_batch_size]))
        recorder.end_epoch()
    with torch.no_grad():
        probs = torch.empty(d.num_examples, 10)
        for rows, x in ((d.train_index, d.train_x), (d.val_index, d.val_x)):
            probs[rows] = torch.cat([torch.softmax(model(x[i:i + 256]), 1) for i in range(0, len(x), 256)])
    clean = torch.empty_like(given)
    clean[d.train_index], clean[d.val_index] = d.train_clean, d.val_clean
    trained = torch.zeros(d.num_examples, dtype=torch.bool)
    trained[d.train_index] = True
    recorder.save(tmp_path / "plain", given, probs=probs, clean_labels=clean, trained=trained)
    with np.load(tmp_path / "run" / "evidence.npz") as a, np.load(tmp_path / "plain" / "evidence.npz") as b:
        assert sorted(a.files) == sorted(b.files)
        for name in a.files:
            assert np.array_equal(a[name], b[name], equal_nan=True), name


def test_an_aux_runs_recorded_probabilities_exclude_the_offsets(tmp_path):
    """lr 0: the network never changes, while AUX's table moves; the recorded probabilities are
    the network's own softmax, not that of the logits plus the offsets."""
    config = TrainConfig(method="aux", epochs=1, batch_size=512, engine="reference", lr=0.0, aux_lr=50.0)
    trainer = Trainer(config, RunFolder(tmp_path), progress=False, log=lambda s: None)
    trainer.fit()
    e = load_evidence(tmp_path)
    assert np.abs(e.aux_offsets[e.trained]).max() > 1.0  # the offsets did move
    trainer.model.train()
    with torch.no_grad():
        own = torch.softmax(trainer.model(trainer.data.train_x), 1).double().numpy()
    np.testing.assert_allclose(e.probs_mean[trainer.data.train_index.numpy()], own, rtol=1e-4, atol=1e-6)


def test_the_registry_names_every_detector_once_and_refuses_an_unknown_one():
    assert list(DETECTORS) == ["small_loss", "confident_learning", "aux_offsets", "accumulated_margin",
                               "adaptive_posterior", "small_loss_or_posterior"]
    with pytest.raises(ValueError, match="unknown detector 'nope'; valid choices: small_loss, confident_learning"):
        get_detector("nope")
    rng = np.random.default_rng(1)
    p = rng.dirichlet(np.ones(3), size=20)
    y = rng.integers(0, 3, 20)
    e = Evidence(index=np.arange(20), given_label=y, probs=p, probs_mean=p, margin_mean=np.zeros(20), probs_ema=p,
                 epochs=1)
    assert "aux_offsets" not in run_detectors(e)  # no offsets in the evidence: the detector is left out
    assert list(run_detectors(e, ["small_loss"])) == ["small_loss"]
    # float32 evidence, as the file holds it: within float32's rounding of the float64 loss
    np.testing.assert_allclose(run_detectors(e)["small_loss"].score, -np.log(p[np.arange(20), y]), rtol=1e-6)


def test_val_fraction_zero_trains_on_every_example_and_reports_the_last_epoch(tmp_path):
    config = TrainConfig(method="sgd", epochs=2, batch_size=512, engine="reference", val_fraction=0.0)
    summary = Trainer(config, RunFolder(tmp_path), progress=False, log=lambda s: None).fit()
    assert summary["num_val"] == 0 and summary["reported_epoch"] == "last (no validation split)"
    assert summary["best_val_epoch"] == 2 and summary["test_acc_at_best_val"] == summary["test_acc_last"]
    e = load_evidence(tmp_path)
    assert e.trained.all() and e.given_label.size == 6000


def random_epochs(gen: torch.Generator, n: int, m: int, epochs: int, batch: int):
    """Each epoch's (index, logits) batches: a fresh order cut into batches (the last one short)."""
    out = []
    for _ in range(epochs):
        order = torch.randperm(n, generator=gen)
        out.append([(order[i:i + batch], torch.randn(min(batch, n - i), m, generator=gen)) for i in range(0, n, batch)])
    return out


def assert_same_readings(a: EvidenceRecorder, b: EvidenceRecorder) -> None:
    sa, sb = a.state_dict(), b.state_dict()
    assert sa.keys() == sb.keys()
    for key, value in sa.items():
        assert torch.equal(value, sb[key]) if isinstance(value, torch.Tensor) else value == sb[key], key


def test_host_staging_folds_late_but_the_same(fresh_seed):
    """Host storage: each batch is staged and folded LAG batches later (or when read); the readings
    are bit for bit those of folding at once, whatever the batch sizes (a grown staging buffer too)."""
    from cdr_fast.detection import recorder as recorder_module

    gen = torch.Generator().manual_seed(fresh_seed)
    n, m = 53, 7
    labels = torch.randint(0, m, (n,), generator=gen)
    at_once = EvidenceRecorder(n, m, labels=labels, keep_epoch=True)
    staged = EvidenceRecorder(n, m, labels=labels, keep_epoch=True, storage="host")
    assert staged.storage == "host" and staged.place.type == "cpu" and staged.device_bytes() == 0
    for e, batches in enumerate(random_epochs(gen, n, m, 3, batch=8 if fresh_seed % 2 else 20)):
        batches = [(torch.arange(0), torch.zeros(0, m)), *batches]  # an empty batch first
        for i, (idx, logits) in enumerate(batches):
            at_once.record(idx, logits)
            staged._stage(idx, torch.softmax(logits, 1))  # what record does with logits on a GPU
            assert len(staged._pending) <= recorder_module.LAG
            if e == 1 and i == 2:  # a mid-epoch read flushes what is in flight
                assert_same_readings(at_once, staged)
                assert not staged._pending
        at_once.end_epoch()
        staged.end_epoch()
    assert_same_readings(at_once, staged)


def test_each_record_is_a_visit():
    """Visiting an example twice in an epoch counts two visits (the mean is over both)."""
    r = EvidenceRecorder(2, 2)
    p, q = torch.tensor([[0.9, 0.1]]), torch.tensor([[0.5, 0.5]])
    r.record([0], logits_of(p))
    r.record([0], logits_of(q))
    r.end_epoch()
    mean, _, ema = r.means()
    np.testing.assert_allclose(mean[0], [0.7, 0.3], rtol=1e-6)
    np.testing.assert_allclose(ema[0], [0.9 * (1 - EMA_WEIGHT) + 0.5 * EMA_WEIGHT, 0.1 * (1 - EMA_WEIGHT)
                                        + 0.5 * EMA_WEIGHT], rtol=1e-6)
    assert r.visits.tolist() == [2, 0] and mean[1].tolist() == [0.0, 0.0]
    with pytest.raises(ValueError, match="unknown storage 'disk'; valid choices: auto, device, host"):
        EvidenceRecorder(2, 2, storage="disk")


class Ranks:
    """An in-process stand-in for torch.distributed: ``world`` threads, and an all-reduce (sum)
    that meets at a barrier."""

    def __init__(self, world: int) -> None:
        import threading

        self.world, self.barrier = world, threading.Barrier(world)
        self.slots: list[torch.Tensor | None] = [None] * world

    def all_reduce(self, rank: int):
        def reduce(t: torch.Tensor) -> torch.Tensor:
            self.slots[rank] = t.clone()
            self.barrier.wait()
            total = sum(self.slots[1:], self.slots[0].clone())
            self.barrier.wait()  # everyone has read before the slots are reused
            t.copy_(total)
            return t
        return reduce


@pytest.mark.parametrize("world", [2, 3])
def test_merging_the_ranks_shares_is_the_single_process_recording(fresh_seed, world, monkeypatch):
    """Each rank records its contiguous share of every batch (some shares empty, an example left out
    of an epoch); after merge_ranks every rank holds bit for bit the readings of one recorder that
    saw every batch, also with the merge cut into blocks of a few rows and across a mid-epoch
    checkpoint of each rank's rows."""
    import threading

    from cdr_fast.detection import recorder as recorder_module

    monkeypatch.setattr(recorder_module, "MERGE_BYTES", 4 * 8 * 5)  # blocks of 4 rows
    gen = torch.Generator().manual_seed(fresh_seed)
    n, m = 29, 5
    labels = torch.randint(0, m, (n,), generator=gen)
    epochs = random_epochs(gen, n, m, 3, batch=world + 3)
    epochs[1] = [(idx[idx != 0], x[idx != 0]) for idx, x in epochs[1]]  # example 0 unvisited in epoch 2
    one = EvidenceRecorder(n, m, labels=labels, keep_epoch=True)
    for batches in epochs:
        for idx, logits in batches:
            one.record(idx, logits)
        one.end_epoch()
    group = Ranks(world)
    ranks = [EvidenceRecorder(n, m, labels=labels, keep_epoch=True) for _ in range(world)]

    def run(rank: int) -> None:
        r = ranks[rank]
        for e, batches in enumerate(epochs):
            for b, (idx, logits) in enumerate(batches):
                share = torch.tensor_split(torch.arange(idx.numel()), world)[rank]
                r.record(idx[share], logits[share])
                if e == 2 and b == 1:  # a mid-epoch checkpoint: the main rank's state, each rank's rows
                    mine = r.epoch_rows()
                    if rank == 0:
                        group.checkpoint = r.state_dict()
                    group.barrier.wait()
                    fresh = EvidenceRecorder(n, m, labels=labels, keep_epoch=True)  # every rank resumes from it
                    fresh.load_state_dict(group.checkpoint)
                    fresh.load_epoch_rows(mine)
                    ranks[rank] = r = fresh
            r.merge_ranks(group.all_reduce(rank), keeps_unseen=rank == 0)
            r.end_epoch()

    threads = [threading.Thread(target=run, args=(k,)) for k in range(world)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    for r in ranks:
        assert_same_readings(one, r)


@pytest.mark.skipif(not torch.cuda.is_available(), reason="the staging path needs CUDA logits (bench/gpu_check.sh runs it)")
@pytest.mark.parametrize("device", ["cuda", "cuda:0"])
def test_on_a_gpu_host_storage_records_what_device_storage_records(fresh_seed, device):
    """CUDA logits into readings on the device and into readings in host memory (pinned staging,
    folded LAG batches late): the same readings, whether the device is named with an index or not."""
    gen = torch.Generator().manual_seed(fresh_seed)
    n, m = 301, 11
    labels = torch.randint(0, m, (n,), generator=gen)
    on_device = EvidenceRecorder(n, m, device, labels=labels, storage="device", keep_epoch=True)
    on_host = EvidenceRecorder(n, m, device, labels=labels, storage="host", keep_epoch=True)
    for batches in random_epochs(gen, n, m, 3, batch=32):
        for idx, logits in batches:
            for r in (on_device, on_host):
                r.record(idx.cuda(), logits.cuda())
        for r in (on_device, on_host):
            r.end_epoch()
    assert on_host.device_bytes() == 0 and on_device.device_bytes() > 0
    a, b = on_device.state_dict(), on_host.state_dict()
    for key, value in a.items():
        if isinstance(value, torch.Tensor):
            torch.testing.assert_close(value, b[key], rtol=1e-6, atol=1e-7, msg=key)
