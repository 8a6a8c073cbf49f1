"""Streaming a folder of images (``--stream``): the same images, the same run, bit for bit, as the
in-memory path; chosen when the images would not fit; bad files one line each."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from PIL import Image

from cdr_fast.data import DatasetError, ImageFiles, load_dataset
from cdr_fast.data import files as files_module
from cdr_fast.data.batches import batches, ranges
from cdr_fast.training import RunFolder, RunStopped, Trainer, TrainConfig, cli
from conftest import REPO
from test_training import assert_same_evidence

TINY = REPO / "tests" / "data" / "tiny_folder"


def photo_folder(root, gen: np.random.Generator, sizes=((40, 30), (33, 47), (32, 32)), per_class=(7, 6, 5)):
    """RGB photos of mixed sizes (and one greyscale file, converted to RGB like the rest) in 3 classes."""
    for split, count in (("train", per_class), ("test", (2, 2, 2))):
        for c, k in enumerate(count):
            (root / split / f"class{c}").mkdir(parents=True)
            for i in range(k):
                w, h = sizes[(i + c) % len(sizes)]
                pixels = gen.integers(0, 256, (h, w, 3), dtype=np.uint8)
                image = Image.fromarray(pixels) if (split, c, i) != ("train", 1, 0) else Image.fromarray(pixels[..., 0])
                image.save(root / split / f"class{c}" / f"{i:03d}.{'png' if i % 2 else 'jpg'}")
    return root


def test_streamed_images_are_the_in_memory_ones(fresh_seed, tmp_path):
    """Every image decoded by a worker equals the in-memory tensor's row exactly, with the same
    normalisation, on the grey example folder and on RGB photos of mixed sizes resized."""
    photos = photo_folder(tmp_path / "photos", np.random.default_rng(fresh_seed))
    for root, size in ((TINY, None), (photos, 24)):
        whole = load_dataset("folder", root, size)
        streamed = load_dataset("folder", root, size, stream=True, workers=2)
        assert isinstance(streamed.train_images, ImageFiles) and whole.streamed is None
        assert streamed.normalisation == whole.normalisation
        assert streamed.train_images.shape == tuple(whole.train_images.shape)
        assert torch.equal(streamed.train_labels, whole.train_labels) and streamed.train_files == whole.train_files
        order = torch.randperm(whole.train_images.shape[0], generator=torch.Generator().manual_seed(fresh_seed))
        cut = [order[:5], order[5:6], order[6:]]  # sizes 5, 1 and the rest
        got = list(batches(streamed.train_images, cut, torch.device("cpu")))
        for index, x in zip(cut, got):
            assert torch.equal(x, whole.train_images[index])
        test = torch.cat(list(batches(streamed.test_images, ranges(0, streamed.test_images.shape[0], 4),
                                      torch.device("cpu"))))
        assert torch.equal(test, whole.test_images)


def test_the_normalisation_is_exact_on_its_sample(fresh_seed, tmp_path, monkeypatch):
    """Past ``STATS_SAMPLE`` images the mean and deviation come from a fixed sample of them, the same
    for both paths, and equal float64 statistics of that sample's pixels."""
    photos = photo_folder(tmp_path / "photos", np.random.default_rng(fresh_seed))
    monkeypatch.setattr(files_module, "STATS_SAMPLE", 7)
    whole = load_dataset("folder", photos, 20)
    streamed = load_dataset("folder", photos, 20, stream=True, workers=0)
    assert streamed.normalisation == whole.normalisation
    sample = files_module.stats_sample(18)
    assert sample.size == 7 and np.unique(sample).size == 7
    scan = files_module.scan_folder(photos, 20)
    pixels = np.stack([files_module.decode(scan.train.paths[i], "RGB", 20) for i in sample]).astype(np.float64) / 255
    mean, std = pixels.mean((0, 2, 3)), pixels.std((0, 2, 3))
    np.testing.assert_allclose(whole.normalisation[0], mean, rtol=1e-6)
    np.testing.assert_allclose(whole.normalisation[1], std, rtol=1e-6)


def small_folder_config(**overrides) -> TrainConfig:
    settings = dict(dataset="folder", data_dir=str(TINY), epochs=2, batch_size=32, milestones=[1], method="cdr_aux",
                    noise_type="symmetric", noise_rate=0.2, tau=0.2, eval_batch_size=64, workers=2)
    return TrainConfig(**{**settings, **overrides})


def same_state(a: Trainer, b: Trainer) -> None:
    sa, sb = a.state_dict(), b.state_dict()
    for key in ("model", "aux"):
        assert all(torch.equal(sa[key][name], sb[key][name]) for name in sa[key]), key
    strip = lambda h: [{k: v for k, v in s.items() if "time" not in k} for s in h]  # noqa: E731
    assert strip(sa["history"]) == strip(sb["history"])


@pytest.mark.filterwarnings("ignore:Seems like `optimizer.step\\(\\)` has been overridden")
def test_a_streamed_run_is_the_in_memory_run_and_resumes_exactly(tmp_path):
    """CDR+AUX on the example folder: streamed on 2 workers, it ends bit-identical to the in-memory
    run; stopped mid-epoch and resumed, it ends bit-identical again, with the same evidence."""
    lines: list[str] = []
    whole = Trainer(small_folder_config(stream=False), RunFolder(tmp_path / "whole"), progress=False,
                    log=lambda line: None)
    whole.fit()
    streamed = Trainer(small_folder_config(stream=True), RunFolder(tmp_path / "streamed"), progress=False,
                       log=lines.append)
    assert any(line.startswith("streaming the images from their files: as asked") for line in lines)
    streamed.fit()
    same_state(whole, streamed)
    assert_same_evidence(tmp_path / "whole", tmp_path / "streamed", epochs=2)

    stopped = Trainer(small_folder_config(stream=True), RunFolder(tmp_path / "stopped"), progress=False,
                      log=lambda line: None, checkpoint_every=3)
    original, calls = stopped.optimizer.step, []
    steps = stopped.steps_per_epoch

    def step_then_signal(*args, **kwargs):
        calls.append(1)
        if len(calls) == steps + 4:
            stopped.stop_signal = "SIGTERM"
        return original(*args, **kwargs)

    stopped.optimizer.step = step_then_signal
    with pytest.raises(RunStopped):
        stopped.fit()
    resumed = Trainer(small_folder_config(stream=True, workers=1), RunFolder(tmp_path / "stopped"), progress=False,
                      log=lambda line: None)  # another worker count: the same images
    resumed.resume()
    assert (resumed.epoch, resumed.saved_step) == (1, 4)
    resumed.fit()
    same_state(whole, resumed)
    assert_same_evidence(tmp_path / "whole", tmp_path / "stopped", epochs=2)


def test_streaming_is_chosen_where_the_images_would_not_fit(tmp_path, capsys):
    """With --memory-gb below twice the images' size the run streams and says why, in one line;
    with room it does not."""
    common = ["--dataset", "folder", "--data-dir", str(TINY), "--epochs", "1", "--method", "sgd", "--workers", "0",
              "--no-progress"]
    nbytes = (319 + 0) * 28 * 28 * 4  # at least the training images
    assert cli.main([*common, "--memory-gb", str(nbytes / 2**30), "--out", str(tmp_path / "a")]) == 0
    out = capsys.readouterr().out
    said = [line for line in out.splitlines() if line.startswith("streaming the images")]
    assert len(said) == 1 and (  # 400 images x 3,136 B = 1.196 MiB
        "would take 1.2 MiB, more than half of the 1.0 MiB the run may use; decoding in the training process" in said[0])
    assert cli.main([*common, "--memory-gb", "1", "--out", str(tmp_path / "b")]) == 0
    assert "streaming the images" not in capsys.readouterr().out


def test_stream_errors_are_one_line(tmp_path, capsys, fresh_seed):
    """--stream on data that is not image files, instance noise on a stream, a negative worker count,
    and a file that decodes badly in a worker: each one line naming the value or the file."""
    with pytest.raises(ValueError, match="dataset 'mnist-mini' cannot be streamed.*folder"):
        TrainConfig(stream=True).validate()
    with pytest.raises(DatasetError, match="dataset 'npz' cannot be streamed"):
        load_dataset("npz", REPO / "tests" / "data" / "tiny.npz", stream=True)
    with pytest.raises(ValueError, match="invalid workers: -1; must be an integer >= 0"):
        small_folder_config(workers=-1).validate()
    with pytest.raises(ValueError, match="invalid memory_gb: 0"):
        small_folder_config(memory_gb=0).validate()
    with pytest.raises(ValueError, match="noise type 'instance' draws each flip from the images"):
        Trainer(small_folder_config(stream=True, noise_type="instance", noise_rate=0.2), None, progress=False,
                log=lambda line: None)
    photos = photo_folder(tmp_path / "photos", np.random.default_rng(fresh_seed))
    data = load_dataset("folder", photos, 16, stream=True, workers=2)
    bad = photos / "train" / "class2" / "001.png"
    bad.write_bytes(bad.read_bytes()[:60])  # the header reads; the pixels do not
    for reading in (lambda: list(batches(data.train_images, ranges(0, data.train_images.shape[0], 4),
                                         torch.device("cpu"))),
                    lambda: load_dataset("folder", photos, 16, stream=True, workers=2)):  # its normalisation
        with pytest.raises(DatasetError) as info:
            reading()
        message = str(info.value)
        assert "001.png: not a readable image" in message and "\n" not in message and "Traceback" not in message


def test_prediction_on_streamed_images_is_the_in_memory_prediction(fresh_seed, tmp_path):
    """predict_probabilities reads image files as it reads a tensor, and renormalising streamed
    images to another run's statistics gives what renormalising the tensor gives (to rounding)."""
    from cdr_fast.models import build_model
    from cdr_fast.trained import predict_probabilities, renormalised

    photos = photo_folder(tmp_path / "photos", np.random.default_rng(fresh_seed))
    whole = load_dataset("folder", photos, 28)
    streamed = load_dataset("folder", photos, 28, stream=True, workers=1)
    torch.manual_seed(fresh_seed)
    model = build_model("lenet", 3, (3, 28, 28))
    assert whole.train_images.is_contiguous()  # not channels-last in memory: convolutions would round otherwise
    np.testing.assert_array_equal(predict_probabilities(model, streamed.train_images, 5),
                                  predict_probabilities(model, whole.train_images, 5))
    run = ([0.5, 0.4, 0.3], [0.2, 0.25, 0.3])
    moved = renormalised(streamed.test_images, streamed.normalisation, run)
    assert isinstance(moved, ImageFiles)
    expected = renormalised(whole.test_images, whole.normalisation, run)
    got = torch.cat(list(batches(moved, ranges(0, moved.shape[0], 4), torch.device("cpu"))))
    torch.testing.assert_close(got, expected, rtol=1e-5, atol=1e-5)


def test_a_streamed_rgb_run_is_the_in_memory_run(fresh_seed, tmp_path):
    """RGB photos of mixed sizes, resized: streamed and in memory, the same run bit for bit."""
    photos = photo_folder(tmp_path / "photos", np.random.default_rng(fresh_seed))
    runs = []
    for stream in (False, True):
        config = small_folder_config(data_dir=str(photos), image_size=28, model="lenet", batch_size=4, stream=stream,
                                     noise_rate=0.3, tau=0.3)
        runs.append(Trainer(config, RunFolder(tmp_path / f"run{stream}"), progress=False, log=lambda line: None))
        runs[-1].fit()
    same_state(*runs)
    assert_same_evidence(tmp_path / "runFalse", tmp_path / "runTrue", epochs=2)


def test_the_colour_mode_is_rgb_if_any_header_is_in_colour_and_a_big_folder_samples_its_headers(tmp_path,
                                                                                                   monkeypatch):
    """A greyscale first file does not make a colour folder grey. With --image-size only a spread
    sample of headers is read, and a bad file outside it is named when it is decoded."""
    rng = np.random.default_rng(0)
    for split in ("train", "test"):
        for c in range(2):
            (tmp_path / split / f"c{c}").mkdir(parents=True)
            for i in range(4):
                pixels = rng.integers(0, 256, (10, 12, 3), dtype=np.uint8)
                image = Image.fromarray(pixels[..., 0] if (c, i) == (0, 0) else pixels)  # the very first: grey
                image.save(tmp_path / split / f"c{c}" / f"{i}.png")
    scan = files_module.scan_folder(tmp_path)
    assert scan.mode == "RGB" and scan.shape == (3, 10, 12)
    assert load_dataset("folder", tmp_path).train_images.shape == (8, 3, 10, 12)
    (tmp_path / "train" / "c1" / "2.png").write_bytes(b"not an image")
    with pytest.raises(DatasetError, match="c1/2.png: not a readable image"):
        files_module.scan_folder(tmp_path, 8)  # every header, while the sample covers them all
    monkeypatch.setattr(files_module, "HEADER_SAMPLE", 3)  # files 0, 8 and 15 of 16: not train/c1/2.png (6)
    assert files_module.scan_folder(tmp_path, 8).mode == "RGB"
    with pytest.raises(DatasetError, match="c1/2.png: not a readable image"):
        load_dataset("folder", tmp_path, 8)  # the bad file is named as it is decoded
