"""Tell a local model path from a hub id before loading, so that a mistyped path is one line
at once instead of a minute of network retries and a message about connections.

A name is a local path when it exists, starts with `.`, `/` or `~`, or its first part is an
existing local directory (`runs/nope` when `runs/` exists). Anything else is a hub id: it is
looked up once with a short timeout, unless it is already in the local hub cache.
"""

from __future__ import annotations

import os
from pathlib import Path

from uldkit.errors import ModelError
from uldkit.io import is_local_path

HUB_TIMEOUT_SECONDS = 5.0
_SHOWN_ENTRIES = 8


def check_model_name(path: str | os.PathLike) -> None:
    """Raise a one-line ModelError when `path` names neither a local directory nor a model
    the hub (or its local cache) can give."""
    name = str(path)
    local = Path(name).expanduser()
    if local.exists():
        return
    if is_local_path(name):
        raise ModelError(f"no model directory {name}; {_holdings(local)}")
    _check_hub_id(name)


def _holdings(missing: Path) -> str:
    parent = missing.parent
    while not parent.is_dir() and parent != parent.parent:
        parent = parent.parent
    entries = sorted(p.name + ("/" if p.is_dir() else "") for p in parent.iterdir()
                     if not p.name.startswith("."))
    where = f"{parent}/" if str(parent) != "." else "the current directory"
    if not entries:
        return f"{where} is empty"
    shown = ", ".join(entries[:_SHOWN_ENTRIES])
    more = f" (and {len(entries) - _SHOWN_ENTRIES} more)" if len(entries) > _SHOWN_ENTRIES else ""
    return f"{where} holds: {shown}{more}"


def _check_hub_id(name: str) -> None:
    import huggingface_hub
    from huggingface_hub import errors

    not_local = f"'{name}' is not a local directory"
    try:
        if isinstance(huggingface_hub.try_to_load_from_cache(name, "config.json"), str):
            return  # downloaded before: loads without the network
    except errors.HFValidationError:
        raise ModelError(f"{not_local}, nor a valid hub model id") from None
    if _offline():
        raise ModelError(f"{not_local}, and HF_HUB_OFFLINE is set, so the hub was not asked")
    try:
        huggingface_hub.HfApi().model_info(name, timeout=HUB_TIMEOUT_SECONDS)
    except (errors.RepositoryNotFoundError, errors.GatedRepoError) as err:
        reason = "is gated (log in with `hf auth login`)" if isinstance(
            err, errors.GatedRepoError) else "is not a model there either"
        raise ModelError(f"{not_local}; on the hub it {reason}") from None
    except errors.HfHubHTTPError as err:
        raise ModelError(f"{not_local}, and the hub answered: {_first_line(err)}") from None
    except Exception as err:  # connection refused, DNS, timeout: whatever the HTTP client raises
        raise ModelError(f"{not_local}, and the hub could not be reached to look it up "
                         f"({type(err).__name__})") from None


def _offline() -> bool:
    return os.environ.get("HF_HUB_OFFLINE", "").strip().lower() in {"1", "true", "yes", "on"}


def _first_line(err: Exception) -> str:
    text = str(err).strip()
    return text.splitlines()[0] if text else type(err).__name__
