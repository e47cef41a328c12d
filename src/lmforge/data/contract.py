"""How sizes flow from the data to the model and module: a data module's `dims` name values from the
declared list `DIMS`, and a parameter takes one only when it says so (`FromData[...]`), not by its name.

    def mlp(input_size: FromData[Optional[int]] = None, ...)    # filled from the data when null
"""

from __future__ import annotations

import inspect
import typing
from typing import Annotated, Any, Callable, TypeVar

from lmforge.errors import UserError

#: The sizes a data module may decide, and what each is.
DIMS = {
    "vocab_size": "tokens in the tokenizer",
    "input_size": "features of one input (pixels of an image)",
    "num_classes": "classes of the labels (plain classifiers)",
    "num_labels": "labels of a text classifier",
    "labels": "the label names, in id order",
    "image_size": "height and width of the (square) images a vision model reads",
    "sampling_rate": "audio samples per second (speech data, resampled to it)",
}


class _FollowsData:
    """The marker `FromData` puts on a parameter: its null value is filled from the data's `dims`."""

    def __repr__(self) -> str:
        return "FollowsData"


FOLLOWS_DATA = _FollowsData()
T = TypeVar("T")
FromData = Annotated[T, FOLLOWS_DATA]


def data_parameters(target: Callable) -> set[str]:
    """The parameters of a model or module factory (a class or function) marked `FromData`; none for a
    callable whose annotations cannot be read (a builtin)."""
    func = target.__init__ if inspect.isclass(target) else target
    try:
        hints = typing.get_type_hints(func, include_extras=True)
    except TypeError:  # a builtin type or C function: it declares nothing
        return set()
    return {name for name, hint in hints.items()
            if typing.get_origin(hint) is Annotated and FOLLOWS_DATA in hint.__metadata__}


def declared_dims(datamodule: Any, dims: dict[str, Any]) -> dict[str, Any]:
    """`dims` itself when each name is a declared one (DIMS); else one line naming the data module."""
    unknown = sorted(set(dims) - set(DIMS))
    if unknown:
        raise UserError(f"{type(datamodule).__name__}.dims names {', '.join(unknown)}, which no model parameter "
                        f"follows (declared sizes: {', '.join(DIMS)})")
    return dims
