"""A user's own model factory, as --model tests.user_models:tiny names it."""

from torch import nn


def tiny(num_classes, input_shape):
    return nn.Sequential(nn.Flatten(), nn.Linear(int(__import__("math").prod(input_shape)), 16), nn.ReLU(),
                         nn.Linear(16, num_classes))


def not_a_module(num_classes, input_shape):
    return "a string"
