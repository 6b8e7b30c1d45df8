"""What every explainer shares: the differentiated score of the target class, input checks, and
the batched input gradient."""

from __future__ import annotations

import torch
from torch import Tensor, nn

from ..core.batching import chunk_ranges
from ..core.inputs import check_model_input, check_targets

__all__ = ["OUTPUTS", "Objective", "graph_input", "batched_gradient", "view_rows"]

OUTPUTS = ("logit", "probability", "log_probability")


class Objective:
    """The model, the targets and the differentiated score; checks the target range once."""

    def __init__(self, model: nn.Module, x: Tensor, target, output: str = "logit"):
        if output not in OUTPUTS:
            raise ValueError(f"output must be one of {OUTPUTS}, got {output!r}")
        check_model_input(model, x)
        self.model, self.output, self.n = model, output, x.shape[0]
        # Type and shape now; the range once the first logits show the number of classes.
        self.target = check_targets(target, x.shape[0], None, x.device)
        self._range_checked = False
        # Gradient rules (guided backprop, LRP) act only inside the first backward pass, not when a
        # create_graph map is differentiated again through the same graph.
        self.rules_active = False

    def scores(self, inputs: Tensor, target: Tensor) -> Tensor:
        """Per-row score (B,) of ``target`` for a batch of model inputs."""
        logits = self.model(inputs)
        if not isinstance(logits, Tensor) or logits.dim() != 2:
            shape = tuple(logits.shape) if isinstance(logits, Tensor) else type(logits).__name__
            raise ValueError(f"the model must return logits of shape (N, classes), got {shape}")
        if not self._range_checked:
            check_targets(self.target, self.n, logits.shape[1], logits.device)
            self._range_checked = True
        if self.output == "probability":
            logits = logits.softmax(dim=1)
        elif self.output == "log_probability":
            logits = logits.log_softmax(dim=1)
        return logits.gather(1, target[:, None])[:, 0]

    def input_gradient(self, inputs: Tensor, target: Tensor, create_graph: bool) -> Tensor:
        """d score / d inputs for a batch, in one autograd.grad call over the whole batch."""
        if not create_graph:
            inputs = inputs.detach()
        if not inputs.requires_grad:
            inputs = inputs.detach().requires_grad_(True)
        with torch.enable_grad():
            score = self.scores(inputs, target).sum()
            self.rules_active = True
            try:
                (grad,) = torch.autograd.grad(
                    score, inputs, create_graph=create_graph, allow_unused=True, materialize_grads=True
                )
            finally:
                self.rules_active = False
        return grad


def graph_input(x: Tensor, create_graph: bool) -> Tensor:
    """``x`` itself when the map must stay differentiable, otherwise a detached view."""
    return x if create_graph else x.detach()


def batched_gradient(objective: Objective, x: Tensor, create_graph: bool, batch_size: int) -> Tensor:
    pieces = [
        objective.input_gradient(x[a:b], objective.target[a:b], create_graph)
        for a, b in chunk_ranges(x.shape[0], batch_size)
    ]
    return pieces[0] if len(pieces) == 1 else torch.cat(pieces)


def view_rows(values: Tensor) -> Tensor:
    return values.view(-1, 1, 1, 1)
