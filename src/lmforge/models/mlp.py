"""The textbook dense network: input -> Dense(hidden..., activation) -> Dense(classes)."""

from __future__ import annotations

from typing import Annotated, Literal, Optional

import torch
from pydantic import Field
from torch import nn

from lmforge.data.contract import FromData
from lmforge.errors import UserError

ACTIVATIONS = {"relu": nn.ReLU, "sigmoid": nn.Sigmoid, "tanh": nn.Tanh, "gelu": nn.GELU}


class MLP(nn.Module):
    """Returns logits; the softmax lives in the loss (cross-entropy) or the module (mse, metrics)."""

    def __init__(self, input_size: FromData[Optional[int]] = None, num_classes: FromData[Optional[int]] = None,
                 hidden: list[Annotated[int, Field(ge=1)]] = (128,),
                 activation: Literal["relu", "sigmoid", "tanh", "gelu"] = "relu",
                 dropout: Annotated[float, Field(ge=0, lt=1)] = 0.0):
        super().__init__()
        if input_size is None or num_classes is None:
            raise UserError("model.input_size and model.num_classes must be set (they follow the data "
                            "when built by lmforge)")
        layers: list[nn.Module] = [nn.Flatten()]
        width = input_size
        for size in hidden:
            layers += [nn.Linear(width, size), ACTIVATIONS[activation]()]
            if dropout:
                layers.append(nn.Dropout(dropout))
            width = size
        layers.append(nn.Linear(width, num_classes))
        self.net = nn.Sequential(*layers)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.net(x)
