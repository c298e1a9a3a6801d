"""An untrained ULD assistant that still differs from its target: its LoRA B matrices (zero
after initialisation) drawn at random, the same draw in every test that uses it."""

from __future__ import annotations

import torch

from uldkit.uld.assistant import ZeroCopyAssistant


def random_assistant(model: torch.nn.Module, layers: int = 2) -> ZeroCopyAssistant:
    """`model`'s first `layers` layers with non-zero adapters, in eval mode."""
    assistant = ZeroCopyAssistant(model, layers)
    generator = torch.Generator().manual_seed(1)
    with torch.no_grad():
        for name, param in assistant.named_parameters():
            if "lora_B" in name:
                param.copy_(torch.randn(param.shape, generator=generator) * 0.3)
    return assistant.eval()
