"""The paired pass's pieces: which layer arguments carry the doubled batch, and the wrapper
that runs a decoder layer of [K, N) on the target rows alone (see `uldkit.uld.assistant`)."""

from __future__ import annotations

import torch
from torch import nn

from uldkit.errors import ModelError

Place = tuple[object, ...]  # a layer argument: its position or name, then tuple indices
# The paired pass's rules for one model: the places that carry the batch, the places checked.
PairedRules = tuple[frozenset[Place], frozenset[Place]]


class Stash:
    """The assistant rows of the doubled batch, set aside while layers [K, N) run."""

    rows: torch.Tensor | None = None


class RowPlan:
    """Which layer arguments (by position or name, then index inside tuples) carry the
    doubled batch (`keys`), among all the tensor arguments the check met (`known`).

    Learning (`keys` None): every tensor whose first dimension is the doubled batch is cut,
    and its place recorded in `batch`; every tensor's place in `seen`. In use, a tensor at a
    place the check never met, shaped like the doubled batch, stops the pass: cutting it or
    not would be a guess."""

    def __init__(self, keys: frozenset[Place] | None = None,
                 known: frozenset[Place] = frozenset()) -> None:
        self.keys = keys
        self.known = known
        self.batch: set[Place] = set()
        self.seen: set[Place] = set()

    def target_rows(self, value: object, rows: int, place: Place) -> object:
        if isinstance(value, (tuple, list)):
            return type(value)(self.target_rows(item, rows, (*place, index))
                               for index, item in enumerate(value))
        if not isinstance(value, torch.Tensor):
            return value
        self.seen.add(place)
        if not (value.dim() > 0 and value.shape[0] == 2 * rows):
            return value
        if self.keys is None:
            self.batch.add(place)
        elif place not in self.keys:
            if place not in self.known:
                raise ModelError(f"ULD's paired pass met a layer argument it has not checked "
                                 f"({'.'.join(map(str, place))})")
            return value
        return value[:rows]


class TargetRowsOnly(nn.Module):
    """A decoder layer of [K, N) in the paired pass: it runs on the target rows only.

    The model's forward hands every layer arguments for the doubled batch (masks, position
    embeddings, position ids); those that carry the batch are cut to the target rows. The
    first such layer sets the assistant rows aside, the last puts them back below the target
    rows, for the final norm and the LM head."""

    def __init__(self, layer: nn.Module, rows: int, stash: Stash, plan: RowPlan,
                 first: bool, last: bool) -> None:
        super().__init__()
        self.layer = layer
        self.rows, self.first, self.last = rows, first, last
        object.__setattr__(self, "stash", stash)
        object.__setattr__(self, "plan", plan)

    def __getattr__(self, name: str) -> object:
        try:
            return super().__getattr__(name)
        except AttributeError:  # the model may read the layer's own attributes
            return getattr(self._modules["layer"], name)

    def forward(self, *args: object, **kwargs: object) -> object:
        if self.first:
            hidden = args[0] if args else kwargs["hidden_states"]
            assert isinstance(hidden, torch.Tensor)
            self.stash.rows = hidden[self.rows:]
            hidden = hidden[:self.rows]
            if args:
                args = (hidden, *args[1:])
            else:
                kwargs["hidden_states"] = hidden
        args = tuple(self.plan.target_rows(value, self.rows, (index,))
                     for index, value in enumerate(args))
        kwargs = {name: self.plan.target_rows(value, self.rows, (name,))
                  for name, value in kwargs.items()}
        output = self.layer(*args, **kwargs)
        if not self.last:
            return output
        assert self.stash.rows is not None
        if isinstance(output, tuple):
            return (torch.cat([output[0], self.stash.rows]), *output[1:])
        return torch.cat([output, self.stash.rows])


def doubled(tensor: torch.Tensor) -> torch.Tensor:
    """The batch twice over (target rows, then assistant rows)."""
    return torch.cat([tensor, tensor])


def close(got: torch.Tensor, expected: torch.Tensor) -> bool:
    tolerance = 1e-4 if expected.dtype in (torch.float32, torch.float64) else 3e-2
    scale = 1 + expected.float().abs().max().item()
    return bool((got.float() - expected.float()).abs().max().item() <= tolerance * scale)
