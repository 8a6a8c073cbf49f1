"""Models and their registry: LeNet exactly as the published CDR code builds it, an MLP for
feature vectors, CIFAR-style ResNets for images of any size and channel count, and the user's own
factory (``package.module:function``); starting from local weights (``load_weights``).
docs/design.md, "Map": where to add a model."""

from __future__ import annotations

import importlib
import math
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from .checks import check_choice


class LeNet(nn.Module):
    """LeNet-5 of the CDR code for 28x28 inputs: 61,706 parameters with 1 channel and 10 classes."""

    def __init__(self, in_channels: int = 1, num_classes: int = 10) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(in_channels, 6, 5, stride=1, padding=2)
        self.conv2 = nn.Conv2d(6, 16, 5, stride=1, padding=0)
        self.fc1 = nn.Linear(16 * 5 * 5, 120)
        self.fc2 = nn.Linear(120, 84)
        self.fc3 = nn.Linear(84, num_classes)

    def forward(self, x: Tensor) -> Tensor:
        x = F.max_pool2d(F.relu(self.conv1(x)), 2)
        x = F.max_pool2d(F.relu(self.conv2(x)), 2)
        x = x.flatten(1)
        x = F.relu(self.fc1(x))
        x = F.relu(self.fc2(x))
        return self.fc3(x)


class BasicBlock(nn.Module):
    expansion = 1

    def __init__(self, in_planes: int, planes: int, stride: int = 1) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(in_planes, planes, 3, stride=stride, padding=1, bias=False)
        self.bn1 = nn.BatchNorm2d(planes)
        self.conv2 = nn.Conv2d(planes, planes, 3, stride=1, padding=1, bias=False)
        self.bn2 = nn.BatchNorm2d(planes)
        self.shortcut = _shortcut(in_planes, planes * self.expansion, stride)

    def forward(self, x: Tensor) -> Tensor:
        out = F.relu(self.bn1(self.conv1(x)))
        out = self.bn2(self.conv2(out))
        return F.relu(out + self.shortcut(x))


class Bottleneck(nn.Module):
    expansion = 4

    def __init__(self, in_planes: int, planes: int, stride: int = 1) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(in_planes, planes, 1, bias=False)
        self.bn1 = nn.BatchNorm2d(planes)
        self.conv2 = nn.Conv2d(planes, planes, 3, stride=stride, padding=1, bias=False)
        self.bn2 = nn.BatchNorm2d(planes)
        self.conv3 = nn.Conv2d(planes, planes * self.expansion, 1, bias=False)
        self.bn3 = nn.BatchNorm2d(planes * self.expansion)
        self.shortcut = _shortcut(in_planes, planes * self.expansion, stride)

    def forward(self, x: Tensor) -> Tensor:
        out = F.relu(self.bn1(self.conv1(x)))
        out = F.relu(self.bn2(self.conv2(out)))
        out = self.bn3(self.conv3(out))
        return F.relu(out + self.shortcut(x))


def _shortcut(in_planes: int, out_planes: int, stride: int) -> nn.Module:
    if stride == 1 and in_planes == out_planes:
        return nn.Identity()
    return nn.Sequential(nn.Conv2d(in_planes, out_planes, 1, stride=stride, bias=False), nn.BatchNorm2d(out_planes))


class ResNet(nn.Module):
    """ResNet for small images (3x3 stem, no max-pool), as the CDR code uses on CIFAR."""

    def __init__(self, block: type[nn.Module], num_blocks: list[int], in_channels: int = 3, num_classes: int = 10):
        super().__init__()
        self.in_planes = 64
        self.conv1 = nn.Conv2d(in_channels, 64, 3, stride=1, padding=1, bias=False)
        self.bn1 = nn.BatchNorm2d(64)
        self.layer1 = self._make_layer(block, 64, num_blocks[0], 1)
        self.layer2 = self._make_layer(block, 128, num_blocks[1], 2)
        self.layer3 = self._make_layer(block, 256, num_blocks[2], 2)
        self.layer4 = self._make_layer(block, 512, num_blocks[3], 2)
        self.linear = nn.Linear(512 * block.expansion, num_classes)

    def _make_layer(self, block: type[nn.Module], planes: int, n: int, stride: int) -> nn.Sequential:
        layers = []
        for s in [stride] + [1] * (n - 1):
            layers.append(block(self.in_planes, planes, s))
            self.in_planes = planes * block.expansion
        return nn.Sequential(*layers)

    def forward(self, x: Tensor) -> Tensor:
        out = F.relu(self.bn1(self.conv1(x)))
        out = self.layer4(self.layer3(self.layer2(self.layer1(out))))
        out = F.adaptive_avg_pool2d(out, 1).flatten(1)
        return self.linear(out)


class MLP(nn.Module):
    """A multilayer perceptron for feature vectors (embeddings from a pretrained network, say) or
    flattened small images: ``hidden`` ReLU layers, then the linear classifier ``head``."""

    def __init__(self, in_features: int, num_classes: int, hidden: tuple[int, ...] = (256, 256)) -> None:
        super().__init__()
        layers: list[nn.Module] = [nn.Flatten()]
        width = in_features
        for h in hidden:
            layers += [nn.Linear(width, h), nn.ReLU()]
            width = h
        self.body = nn.Sequential(*layers)
        self.head = nn.Linear(width, num_classes)

    def forward(self, x: Tensor) -> Tensor:
        return self.head(self.body(x))


InputShape = tuple[int, ...]  # one example's shape: (C, H, W) for images, (d,) for feature vectors


def _images(min_size: int, exact: int | None = None) -> Callable[[InputShape], str | None]:
    def accepts(shape: InputShape) -> str | None:
        if len(shape) != 3:
            return f"takes images (C, H, W), not inputs of shape {shape}"
        if exact is not None and shape[1:] != (exact, exact):
            return f"is built for {exact}x{exact} images; these are {shape[1]}x{shape[2]}"
        if min(shape[1:]) < min_size:
            return f"needs images of at least {min_size}x{min_size}; these are {shape[1]}x{shape[2]}"
        return None
    return accepts


@dataclass(frozen=True)
class ModelSpec:
    """One built-in model: how to build it for a number of classes and an input shape, and which
    inputs it takes (``accepts``: None, or why not)."""

    name: str
    build: Callable[[int, InputShape], nn.Module]
    accepts: Callable[[InputShape], str | None]
    data: str  # what it is for, as --help and the README say


# The registry. Adding a model is one entry here (its class above, or anywhere), plus its tests.
MODELS: dict[str, ModelSpec] = {m.name: m for m in (
    ModelSpec("lenet", lambda classes, shape: LeNet(shape[0], classes), _images(28, exact=28),
              "28x28 images, any channels (the seed's MNIST protocol)"),
    ModelSpec("mlp", lambda classes, shape: MLP(math.prod(shape), classes), lambda shape: None,
              "feature vectors (n x d), or small images flattened"),
    ModelSpec("resnet18", lambda classes, shape: ResNet(BasicBlock, [2, 2, 2, 2], shape[0], classes), _images(16),
              "images of 16 pixels or more, any channels"),
    ModelSpec("resnet34", lambda classes, shape: ResNet(BasicBlock, [3, 4, 6, 3], shape[0], classes), _images(16),
              "images of 16 pixels or more, any channels"),
    ModelSpec("resnet50", lambda classes, shape: ResNet(Bottleneck, [3, 4, 6, 3], shape[0], classes), _images(16),
              "images of 16 pixels or more, any channels"),
)}


def is_factory(name: str) -> bool:
    """``package.module:function``: the user's own model factory."""
    return ":" in name


def check_model(name: str) -> str:
    """``name`` if it names a built-in model or has the shape of a factory, else a one-line ValueError."""
    if not is_factory(name):
        check_choice("model", name, list(MODELS) + ["package.module:function"])
    return name


def default_model(shape: InputShape) -> str:
    """The model for data of this shape: LeNet for MNIST-sized images, a ResNet-18 for other
    images, an MLP for feature vectors."""
    if len(shape) != 3:
        return "mlp"
    return "lenet" if shape[1:] == (28, 28) else "resnet18"


def _factory(name: str) -> Callable[..., nn.Module]:
    module_name, _, function = name.partition(":")
    try:
        module = importlib.import_module(module_name)
    except ImportError as err:
        raise ValueError(f"model factory {name!r}: cannot import {module_name!r} ({err})") from None
    factory = getattr(module, function, None)
    if not callable(factory):
        raise ValueError(f"model factory {name!r}: {module_name} has no function {function!r}")
    return factory


def build_model(name: str, num_classes: int, input_shape: InputShape) -> nn.Module:
    """The model ``name`` (a ``MODELS`` entry, or ``package.module:function``, called as
    ``function(num_classes, input_shape)``) for ``num_classes`` classes and examples of
    ``input_shape``; a one-line ValueError if it cannot take such inputs, naming those that can."""
    shape = tuple(int(s) for s in input_shape)
    if is_factory(name):
        model = _factory(name)(num_classes, shape)
        if not isinstance(model, nn.Module):
            raise ValueError(f"model factory {name!r} returned {type(model).__name__}, not a torch.nn.Module")
        return model
    spec = MODELS[check_model(name)]
    why = spec.accepts(shape)
    if why is not None:
        able = [m.name for m in MODELS.values() if m.accepts(shape) is None]
        raise ValueError(f"model {name!r} {why}; models that take inputs of shape {shape}: {', '.join(able)}")
    return spec.build(num_classes, shape)


def classifier_head(model: nn.Module) -> tuple[str, nn.Linear] | None:
    """The model's classifier: its last ``nn.Linear`` (by registration order), and its name."""
    found = None
    for name, module in model.named_modules():
        if isinstance(module, nn.Linear):
            found = (name, module)
    return found


def load_weights(model: nn.Module, path: str | Path, log: Callable[[str], None] = print) -> None:
    """Start ``model`` from ``path``: a state dict saved with ``torch.save(model.state_dict())``, or
    a cdr-fast checkpoint (its model). A classifier head whose class count differs is made anew
    (and ``log`` says so); any other missing, unexpected or misshapen tensor is a one-line ValueError
    naming it. Nothing is downloaded."""
    from .atomic_io import CHECKSUM_TAG, load_checkpoint

    path = Path(path)
    try:
        tail = path.read_bytes()[-200:]
    except OSError as err:
        raise ValueError(f"--weights {path}: cannot read it ({err.strerror})") from None
    if CHECKSUM_TAG in tail:
        state = load_checkpoint(path).get("model")
    else:
        try:
            state = torch.load(path, map_location="cpu", weights_only=True)
        except Exception as err:  # noqa: BLE001 - anything torch cannot read is a bad file
            raise ValueError(f"--weights {path}: not a state dict torch can read ({type(err).__name__})") from None
    if isinstance(state, dict) and "state_dict" in state and isinstance(state["state_dict"], dict):
        state = state["state_dict"]  # a common wrapping (Lightning, many training scripts)
    if not isinstance(state, dict) or not all(isinstance(v, Tensor) for v in state.values()):
        raise ValueError(f"--weights {path}: not a state dict (a mapping of tensor names to tensors)")
    own = model.state_dict()
    head = classifier_head(model)
    head_keys = {f"{head[0]}.weight", f"{head[0]}.bias"} if head is not None else set()
    fresh = []
    for key, tensor in own.items():
        if key not in state:
            raise ValueError(f"--weights {path}: no tensor {key!r} for this model (it has {len(state)} tensors)")
        if state[key].shape != tensor.shape:
            if key in head_keys:
                fresh.append(key)
                continue
            raise ValueError(f"--weights {path}: {key!r} is {tuple(state[key].shape)} there and "
                             f"{tuple(tensor.shape)} in this model")
    extra = sorted(set(state) - set(own))
    if extra:
        raise ValueError(f"--weights {path}: tensor {extra[0]!r} has no place in this model"
                         + (f" (and {len(extra) - 1} more)" if len(extra) > 1 else ""))
    model.load_state_dict({k: (own[k] if k in fresh else state[k]) for k in own})
    if fresh:
        old = state[f"{head[0]}.weight"].shape[0]
        log(f"weights from {path}; the classifier head {head[0]} is made anew ({old} classes there, "
            f"{head[1].out_features} here)")
    else:
        log(f"weights from {path}")
