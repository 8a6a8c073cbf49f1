"""The model registry: every built-in on the inputs it takes, the one-line errors for those it
does not, the user's own factory, and starting from local weights."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from cdr_fast.models import MODELS, build_model, classifier_head, default_model, load_weights


@pytest.mark.parametrize(
    "name,shape,params",
    [("lenet", (1, 28, 28), 61_706), ("resnet18", (3, 32, 32), 11_173_962), ("resnet50", (3, 32, 32), 23_520_842),
     ("resnet34", (3, 32, 32), 21_282_122), ("mlp", (64,), 64 * 256 + 256 + 256 * 256 + 256 + 256 * 10 + 10)],
)
def test_parameter_counts_and_output_shape(name, shape, params):
    model = build_model(name, 10, shape)
    assert sum(p.numel() for p in model.parameters()) == params
    model.eval()
    with torch.no_grad():
        assert model(torch.randn(2, *shape)).shape == (2, 10)


@pytest.mark.parametrize("shape", [(1, 28, 28), (5, 16, 16), (4, 17, 23)])  # any channels, any size >= 16
def test_resnets_take_any_image_of_at_least_16_pixels(shape):
    model = build_model("resnet18", 3, shape).eval()
    with torch.no_grad():
        assert model(torch.randn(2, *shape)).shape == (2, 3)


def test_a_model_that_cannot_take_the_data_names_those_that_can():
    with pytest.raises(ValueError, match=r"unknown model 'vgg'; valid choices: lenet, mlp, resnet18, resnet34, "
                                         r"resnet50, package.module:function"):
        build_model("vgg", 10, (1, 28, 28))
    with pytest.raises(ValueError, match=r"model 'lenet' is built for 28x28 images; these are 32x32; models that "
                                         r"take inputs of shape \(3, 32, 32\): mlp, resnet18, resnet34, resnet50"):
        build_model("lenet", 10, (3, 32, 32))
    with pytest.raises(ValueError, match=r"'resnet18' takes images \(C, H, W\), not inputs of shape \(64,\); models "
                                         r"that take inputs of shape \(64,\): mlp"):
        build_model("resnet18", 10, (64,))
    with pytest.raises(ValueError, match="at least 16x16"):
        build_model("resnet50", 10, (3, 8, 8))


def test_the_default_model_follows_the_datas_shape():
    assert [default_model(s) for s in ((1, 28, 28), (3, 32, 32), (64,))] == ["lenet", "resnet18", "mlp"]
    assert set(MODELS) == {"lenet", "mlp", "resnet18", "resnet34", "resnet50"}


def test_a_users_factory_is_called_with_the_classes_and_the_shape():
    model = build_model("user_models:tiny", 4, (3, 5))
    assert model(torch.randn(2, 3, 5)).shape == (2, 4)
    with pytest.raises(ValueError, match="cannot import 'no_such_module'"):
        build_model("no_such_module:f", 4, (3,))
    with pytest.raises(ValueError, match="user_models has no function 'nope'"):
        build_model("user_models:nope", 4, (3,))
    with pytest.raises(ValueError, match="returned str, not a torch.nn.Module"):
        build_model("user_models:not_a_module", 4, (3,))


def test_weights_load_exactly_and_a_head_of_another_class_count_is_made_anew(tmp_path, fresh_seed):
    torch.manual_seed(fresh_seed)
    source = build_model("resnet18", 7, (3, 16, 16))
    torch.save(source.state_dict(), tmp_path / "backbone.pt")
    lines = []
    same = build_model("resnet18", 7, (3, 16, 16))
    load_weights(same, tmp_path / "backbone.pt", lines.append)
    assert all(torch.equal(a, b) for a, b in zip(same.state_dict().values(), source.state_dict().values()))
    other = build_model("resnet18", 3, (3, 16, 16))
    head_before = other.linear.weight.clone()
    load_weights(other, tmp_path / "backbone.pt", lines.append)
    assert classifier_head(other)[0] == "linear" and torch.equal(other.linear.weight, head_before)  # made anew
    assert torch.equal(other.conv1.weight, source.conv1.weight)  # the backbone is the source's
    assert lines[-1] == f"weights from {tmp_path / 'backbone.pt'}; the classifier head linear is made anew (7 classes " \
                        "there, 3 here)"


def test_any_other_mismatch_is_one_line_naming_the_tensor(tmp_path):
    torch.save(build_model("resnet18", 7, (1, 16, 16)).state_dict(), tmp_path / "grey.pt")
    with pytest.raises(ValueError, match=r"'conv1.weight' is \(64, 1, 3, 3\) there and \(64, 3, 3, 3\) in this model"):
        load_weights(build_model("resnet18", 7, (3, 16, 16)), tmp_path / "grey.pt", print)
    torch.save({"conv1.weight": torch.zeros(64, 3, 3, 3)}, tmp_path / "partial.pt")
    with pytest.raises(ValueError, match="no tensor 'bn1.weight' for this model"):
        load_weights(build_model("resnet18", 7, (3, 16, 16)), tmp_path / "partial.pt", print)
    (tmp_path / "text.pt").write_text("hello")
    with pytest.raises(ValueError, match="not a state dict torch can read"):
        load_weights(nn.Linear(2, 2), tmp_path / "text.pt", print)
