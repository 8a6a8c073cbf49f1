from __future__ import annotations

import pytest
import torch

from cdr_fast.models import build_model


@pytest.mark.parametrize(
    "name,channels,size,params",
    [("lenet", 1, 28, 61_706), ("resnet18", 3, 32, 11_173_962), ("resnet50", 3, 32, 23_520_842)],
)
def test_parameter_counts_and_output_shape(name, channels, size, params):
    model = build_model(name, channels, 10, size)
    assert sum(p.numel() for p in model.parameters()) == params
    model.eval()
    with torch.no_grad():
        assert model(torch.randn(2, channels, size, size)).shape == (2, 10)


def test_resnet_on_mnist_shaped_input():
    model = build_model("resnet18", 1, 10, 28).eval()
    with torch.no_grad():
        assert model(torch.randn(1, 1, 28, 28)).shape == (1, 10)


def test_bad_model_and_size():
    with pytest.raises(ValueError, match="valid choices: lenet, resnet18, resnet50"):
        build_model("vgg", 1, 10, 28)
    with pytest.raises(ValueError, match="28x28"):
        build_model("lenet", 3, 10, 32)
