"""Checks shared by the model builders: every bad value names its ``model.<field>``."""
from __future__ import annotations


def check_positive_int(field: str, value) -> None:
    if not isinstance(value, int) or isinstance(value, bool) or value < 1:
        raise ValueError(f"model.{field}: expected a positive integer, got {value!r}")


def check_bool(field: str, value) -> None:
    if not isinstance(value, bool):
        raise ValueError(f"model.{field}: expected true or false, got {value!r}")


def check_probability(field: str, value) -> None:
    if not isinstance(value, (int, float)) or isinstance(value, bool) or not 0 <= value < 1:
        raise ValueError(f"model.{field}: expected a number in [0, 1), got {value!r}")


def check_widths(field: str, value, count: int) -> list[int]:
    if not isinstance(value, (list, tuple)) or len(value) != count or any(
            not isinstance(v, int) or isinstance(v, bool) or v < 1 for v in value):
        raise ValueError(f"model.{field}: expected {count} positive integers, got {value!r}")
    return list(value)


def image_shape(io_dims, in_channels: int | None, image_size: int | None) -> tuple[int, int]:
    """(channels, side) of square images: from the task family's input shape (C, H, W), or from the
    config when the family gives none; both must agree when both are given."""
    inputs = io_dims[0]
    if isinstance(inputs, (tuple, list)):
        if len(inputs) != 3 or inputs[1] != inputs[2]:
            raise ValueError(f"model.image_size: expected square images (C, H, W), the task family gives {inputs}")
        family_channels, family_size = int(inputs[0]), int(inputs[1])
        for field, given, family in (("in_channels", in_channels, family_channels),
                                     ("image_size", image_size, family_size)):
            if given is not None and given != family:
                raise ValueError(f"model.{field}: {given} disagrees with the task family's input shape {tuple(inputs)}")
        return family_channels, family_size
    if in_channels is None or image_size is None:
        raise ValueError("model.image_size: the task family gives a flat input size "
                         f"({inputs}); set model.in_channels and model.image_size")
    check_positive_int("in_channels", in_channels)
    check_positive_int("image_size", image_size)
    if in_channels * image_size * image_size != inputs:
        raise ValueError(f"model.image_size: {in_channels}x{image_size}x{image_size} != input size {inputs}")
    return in_channels, image_size


def as_images(x, channels: int):
    """[n, C, H, W] from either that or flat [n, C·H·W] square images."""
    if x.dim() == 4:
        return x
    side = int(round((x.shape[-1] // channels) ** 0.5))
    return x.reshape(x.shape[0], channels, side, side)
