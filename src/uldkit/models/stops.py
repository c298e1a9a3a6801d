"""When generation stops: every id that ends a turn or the text, and stop text for the plain
QA format.

The ids come from the tokenizer (EOS, the chat template's end of turn) and from the model's
generation_config.eos_token_id (an int or a list: chat models list <end_of_turn> or
<|eot_id|> there). A `LanguageModel` that wraps Hugging Face models (plain, ULD, offset)
has its generation_config found on the first such model inside it.
"""

from __future__ import annotations

from typing import Any

import torch
from transformers import PreTrainedModel, PreTrainedTokenizerBase

from uldkit.data.formatting import end_of_turn_id


def stop_token_ids(tokenizer: PreTrainedTokenizerBase, generation_config: Any = None
                   ) -> frozenset[int]:
    ids: list[Any] = [tokenizer.eos_token_id, end_of_turn_id(tokenizer)]
    configured = getattr(generation_config, "eos_token_id", None)
    ids.extend(configured if isinstance(configured, list | tuple) else [configured])
    return frozenset(int(i) for i in ids if i is not None)


def model_stop_ids(lm: Any) -> frozenset[int]:
    """Stop ids of a `LanguageModel`: its tokenizer's and its Hugging Face model's."""
    model = _hf_model(lm)
    return stop_token_ids(lm.tokenizer, getattr(model, "generation_config", None))


def _hf_model(lm: Any) -> PreTrainedModel | None:
    seen: set[int] = set()
    queue = [lm]
    while queue:
        item = queue.pop(0)
        if item is None or id(item) in seen:
            continue
        seen.add(id(item))
        if isinstance(item, PreTrainedModel):
            return item
        if isinstance(item, torch.nn.Module):
            found = next((m for m in item.modules() if isinstance(m, PreTrainedModel)), None)
            if found is not None:
                return found
        queue.extend(getattr(item, name, None) for name in ("model", "target", "assistant"))
        queue.extend(getattr(item, "members", None) or [])
    return None
