"""Argument checking shared by the ops: pairs, shapes and the errors that name the tensor at fault."""
from __future__ import annotations

from collections.abc import Sequence

from ..errors import InputError


def pair(value: int | Sequence[int], name: str) -> list[int]:
    """``3 -> [3, 3]``; ``(2, 1) -> [2, 1]`` (height first), with a clear error otherwise."""
    if isinstance(value, int) and not isinstance(value, bool):
        return [int(value), int(value)]
    try:
        items = [int(v) for v in value]  # type: ignore[union-attr]
    except TypeError:
        raise InputError(f"{name} must be an int or a (height, width) pair, got {value!r}") from None
    if len(items) != 2:
        raise InputError(f"{name} must be an int or a (height, width) pair, got {value!r}")
    return items


def expect_rank(tensor, rank: int, name: str, layout: str) -> None:
    if tensor.dim() != rank:
        raise InputError(
            f"{name} must be a {rank}-D tensor {layout}, got shape {tuple(tensor.shape)}",
            fix=f"reshape {name} to {layout}",
        )


def expect_same_dtype_device(reference, others: dict, op: str) -> None:
    for name, t in others.items():
        if t is None:
            continue
        if t.dtype != reference.dtype or t.device != reference.device:
            raise InputError(
                f"{op}: {name} is {t.dtype} on {t.device} but input is {reference.dtype} on {reference.device}",
                fix=f"move/cast {name} to match the input (e.g. {name}.to(input))",
            )
