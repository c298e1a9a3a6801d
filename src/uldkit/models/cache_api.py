"""Pass a KV cache under the name the installed transformers expects.

Releases up to 5.x take `past_key_values=`; newer ones take `cache=` and warn that the old
name will be removed. Which one a function takes is read from its signature, so both work
and neither warns.
"""

from __future__ import annotations

import dataclasses
import inspect
from collections.abc import Callable
from functools import lru_cache
from typing import Any


def cache_argument(function: Callable[..., Any], cache: Any) -> dict[str, Any]:
    """The keyword argument that hands `cache` to `function` (a model, layer or mask builder)."""
    target = function.forward if hasattr(function, "forward") else function
    return {_cache_name(getattr(target, "__func__", target)): cache}


@lru_cache(maxsize=256)
def _cache_name(function: Callable[..., Any]) -> str:
    try:
        parameters = inspect.signature(function).parameters
    except (TypeError, ValueError):
        return _transformers_cache_name()
    if "cache" in parameters:
        return "cache"
    if "past_key_values" in parameters:
        return "past_key_values"
    # A wrapper taking **kwargs hands them on to a transformers model in the end.
    return _transformers_cache_name()


@lru_cache(maxsize=1)
def _transformers_cache_name() -> str:
    from transformers.masking_utils import create_causal_mask

    return "cache" if "cache" in inspect.signature(create_causal_mask).parameters \
        else "past_key_values"


def output_cache_argument(output_class: type, cache: Any) -> dict[str, Any]:
    """The keyword that stores `cache` in a transformers output class (`cache` or
    `past_key_values`, whichever field it has)."""
    names = {item.name for item in dataclasses.fields(output_class)}
    return {"cache" if "cache" in names else "past_key_values": cache}
