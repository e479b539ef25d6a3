"""Recording the select weights of SK units: forward hooks, installed only while recording.

    with AttentionRecorder(model) as recorder:        # hooks on every SK unit's Select
        model(images)
    recorder.weights("SK_3_4")                        # N×M×C, branches smallest field first
    recorder.weights("conv3.block4.sk")               # the same unit by its graph name

The compiled forward is untouched: the recorder hooks the `Select` modules (`forward(logits,
*branches)`, logits path-major N×(M·C)×1×1) and recomputes the softmax over the M branches from
the logits it receives, which costs an N×M×C softmax per unit. Outside the `with` no hook is
installed, so an unrecorded forward runs exactly as before.
"""

from __future__ import annotations

import torch
from torch import Tensor, nn

from .units import SKUnit, find_units, sk_units


class AttentionRecorder:
    """While open, keeps each chosen SK unit's softmax weights: one N×M×C tensor per forward."""

    def __init__(self, model: nn.Module, units: list[str] | tuple[SKUnit, ...] | None = None):
        self.model = model
        every = sk_units(model.graph)
        self.units = units if units and isinstance(units[0], SKUnit) else find_units(every, units)
        self._kept: dict[str, list[Tensor]] = {unit.name: [] for unit in self.units}
        self._handles: list = []

    def __enter__(self) -> "AttentionRecorder":
        for unit in self.units:
            select = self.model.get_submodule(unit.node)
            self._handles.append(select.register_forward_hook(self._keeper(unit)))
        return self

    def __exit__(self, *exc_info) -> None:
        for handle in self._handles:
            handle.remove()
        self._handles.clear()

    def _keeper(self, unit: SKUnit):
        order = list(unit.order)

        def keep(select: nn.Module, inputs: tuple[Tensor, ...], output: Tensor) -> None:
            logits = inputs[0].detach().reshape(-1, unit.branches, unit.channels)  # N×M×C
            # fp32 softmax, as Select's own under autocast; branches reordered smallest first.
            self._kept[unit.name].append(logits.float().softmax(dim=1)[:, order].cpu())
        return keep

    def weights(self, name: str) -> Tensor:
        """N×M×C: the weights of every image since the last `take`, by paper or graph name."""
        unit = find_units(self.units, [name])[0]
        kept = self._kept[unit.name]
        if not kept:
            return torch.empty(0, unit.branches, unit.channels)
        return torch.cat(kept)

    def take(self) -> dict[str, Tensor]:
        """Each unit's weights since the last `take` (N×M×C by paper name), forgetting them."""
        taken = {unit.name: self.weights(unit.name) for unit in self.units}
        for kept in self._kept.values():
            kept.clear()
        return taken


__all__ = ["AttentionRecorder"]
