"""Muon for the hidden weight matrices and AdamW for everything else, as one optimizer.

Muon (Keller Jordan, 2024) keeps a momentum of the gradient and replaces each update matrix by its
nearest semi-orthogonal matrix (U V^T of its SVD), approximated by a few Newton-Schulz iterations, so
that every direction of a matrix moves at the same rate. It suits the 2-D weights inside the blocks;
embeddings, the LM head and 1-D parameters (norms, biases) train with AdamW, as in modded-nanogpt.

Written here rather than using `torch.optim.Muon` because that one runs Newton-Schulz in bf16, ~100x
slower than fp32 on CPUs without bf16 matmul units, and takes matrices only; this one runs it in fp32
on CPU (bf16 on CUDA) and drives both rules from the `kind` of each parameter group.
"""

from __future__ import annotations

from collections import defaultdict
from typing import Any, Callable, Iterable, Optional

import torch
from torch.optim.adamw import adamw

from lmforge.errors import UserError
from lmforge.optim.contract import WholeMatrixOptimizer

KINDS = ("matrix", "embedding", "head", "vector")
# Coefficients of the quintic Newton-Schulz iteration tuned by Keller Jordan: it drives singular values
# into roughly [0.7, 1.2] in five steps (fast rather than exact: exact orthogonality is not needed).
NS_COEFFICIENTS = (3.4445, -4.7750, 2.0315)


def orthogonalize(update: torch.Tensor, steps: int = 5) -> torch.Tensor:
    """Approximately U V^T of `update` ([..., rows, cols], batched), by Newton-Schulz: fp32 on CPU,
    bf16 on CUDA."""
    a, b, c = NS_COEFFICIENTS
    x = update.to(torch.bfloat16 if update.is_cuda else torch.float32)
    wide = x.size(-2) <= x.size(-1)
    if not wide:  # iterate on the smaller Gram matrix
        x = x.mT
    x = x / (x.norm(dim=(-2, -1), keepdim=True) + 1e-7)  # spectral norm <= Frobenius norm <= 1
    for _ in range(steps):
        gram = x @ x.mT
        x = a * x + (b * gram + c * gram @ gram) @ x
    return (x if wide else x.mT).to(update.dtype)


class Muon(WholeMatrixOptimizer):
    """Muon on parameter groups of kind "matrix", AdamW on the others ("embedding", "head", "vector").

    Give it the groups of `CausalLMModule.parameter_groups()`, whose dicts carry a `kind`; a group
    without one is split into matrices (2-D and more) and vectors. A parameter of more than two dims is
    a stack of [rows, cols] matrices (e.g. the native GPT's fused q/k/v), each orthogonalized on its own.
    Matrix groups use `lr`, `momentum`, `nesterov`, `ns_steps` and decoupled `weight_decay`; the update
    of a [rows, cols] matrix is scaled by sqrt(max(1, rows / cols)). AdamW groups use `adam_lr` (or `embedding_lr` / `head_lr` for those
    kinds), `adam_betas`, `adam_eps` and the group's own `weight_decay`. A group's own keys win.
    """

    def __init__(self, params: Iterable, lr: float = 0.02, momentum: float = 0.95, nesterov: bool = True,
                 ns_steps: int = 5, weight_decay: float = 0.0, adam_lr: float = 3e-3,
                 embedding_lr: Optional[float] = None, head_lr: Optional[float] = None,
                 adam_betas: tuple[float, float] = (0.9, 0.95), adam_eps: float = 1e-8,
                 fused: Optional[bool] = None):
        for key, value, ok in (("lr", lr, lr > 0), ("adam_lr", adam_lr, adam_lr > 0), ("ns_steps", ns_steps, ns_steps >= 1),
                               ("momentum", momentum, 0 <= momentum < 1), ("weight_decay", weight_decay, weight_decay >= 0)):
            if not ok:
                raise UserError(f"optimizer.{key}={value} is out of range for Muon")
        lrs = {"matrix": lr, "vector": adam_lr, "embedding": embedding_lr or adam_lr, "head": head_lr or adam_lr}
        groups = []
        for group in self._with_kinds(params):
            kind = group["kind"]
            if kind not in KINDS:
                raise UserError(f"Muon: parameter group kind {kind!r} is not one of {', '.join(KINDS)}")
            groups.append({"lr": lrs[kind], "weight_decay": weight_decay if kind == "matrix" else 0.0, **group})
        defaults = dict(lr=lr, momentum=momentum, nesterov=nesterov, ns_steps=ns_steps, weight_decay=weight_decay,
                        betas=tuple(adam_betas), eps=adam_eps)
        super().__init__(groups, defaults)
        self.fused = fused

    @staticmethod
    def _with_kinds(params: Iterable) -> list[dict[str, Any]]:
        params = list(params)
        if params and not isinstance(params[0], dict):
            params = [{"params": params}]
        groups = []
        for group in params:
            group = dict(group)
            group["params"] = list(group["params"])
            if "kind" in group:
                groups.append(group)
                continue
            for kind, test in (("matrix", lambda p: p.ndim >= 2), ("vector", lambda p: p.ndim < 2)):
                chosen = [p for p in group["params"] if test(p)]
                if chosen:
                    groups.append({**group, "params": chosen, "kind": kind})
        return groups

    @torch.no_grad()
    def step(self, closure: Optional[Callable[[], Any]] = None) -> Any:
        """One update of every parameter; `closure` (re)computes the loss with gradients and is
        returned, as Lightning's automatic optimization expects."""
        loss = None
        if closure is not None:
            with torch.enable_grad():
                loss = closure()
        for group in self.param_groups:
            if group["kind"] == "matrix":
                self._muon(group)
            else:
                self._adamw(group)
        return loss

    def _muon(self, group: dict[str, Any]) -> None:
        momentum, lr, decay = group["momentum"], group["lr"], group["weight_decay"]
        by_shape: dict[tuple, list[tuple[torch.Tensor, torch.Tensor]]] = defaultdict(list)
        for p in group["params"]:
            if p.grad is None:
                continue
            state = self.state[p]
            if not state:
                state["momentum_buffer"] = torch.zeros_like(p)
            buffer = state["momentum_buffer"]
            buffer.lerp_(p.grad, 1 - momentum)
            update = p.grad.lerp(buffer, momentum) if group["nesterov"] else buffer
            by_shape[(tuple(p.shape), p.device, p.dtype)].append((p, update))
        # Parameters of one shape are orthogonalized together: one batched matmul instead of many small ones.
        for (shape, _, _), pairs in by_shape.items():
            updates = orthogonalize(torch.stack([u for _, u in pairs]), group["ns_steps"])
            scale = max(1.0, shape[-2] / shape[-1]) ** 0.5
            for (p, _), update in zip(pairs, updates):
                if decay:
                    p.mul_(1 - lr * decay)
                p.add_(update, alpha=-lr * scale)

    def _adamw(self, group: dict[str, Any]) -> None:
        params, grads, exp_avgs, exp_avg_sqs, steps = [], [], [], [], []
        for p in group["params"]:
            if p.grad is None:
                continue
            state = self.state[p]
            if not state:
                # Where torch's own AdamW keeps it: on the device for the fused kernel, else on the CPU.
                state["step"] = torch.zeros((), device=p.device if self.fused else "cpu")
                state["exp_avg"] = torch.zeros_like(p)
                state["exp_avg_sq"] = torch.zeros_like(p)
            params.append(p)
            grads.append(p.grad)
            exp_avgs.append(state["exp_avg"])
            exp_avg_sqs.append(state["exp_avg_sq"])
            steps.append(state["step"])
        if params:
            beta1, beta2 = group["betas"]
            adamw(params, grads, exp_avgs, exp_avg_sqs, [], steps, fused=self.fused, amsgrad=False,
                  beta1=beta1, beta2=beta2, lr=group["lr"], weight_decay=group["weight_decay"], eps=group["eps"],
                  maximize=False)
