"""How long one text field may be, checked when data is read and before anything tokenizes it.

A tokenizer holds tens of bytes per character of its input at once: one 200 MB answer asks
it for gigabytes and the process dies. Fields longer than the limit are refused, naming the
row and field; the limit is an environment variable, so every command honours it.
"""

from __future__ import annotations

import os

from uldkit.errors import ConfigError, DataError

FIELD_LIMIT_VAR = "ULDKIT_MAX_FIELD_CHARS"  # a question, answer or other QA text
DOCUMENT_LIMIT_VAR = "ULDKIT_MAX_DOCUMENT_CHARS"  # one document (a passage, a book)
DEFAULT_FIELD_CHARS = 100_000
DEFAULT_DOCUMENT_CHARS = 10_000_000


def check_field_length(text: str, field: str, where: str, *, document: bool = False) -> str:
    """`text`, or a DataError naming `where`, `field`, the limit and how to raise it."""
    variable, default = ((DOCUMENT_LIMIT_VAR, DEFAULT_DOCUMENT_CHARS) if document
                         else (FIELD_LIMIT_VAR, DEFAULT_FIELD_CHARS))
    limit = _limit(variable, default)
    if len(text) > limit:
        raise DataError(
            f"{where}: field '{field}' has {len(text):,} characters; the limit is {limit:,} "
            f"(to allow it, set {variable} to a larger number of characters)"
        )
    return text


def _limit(variable: str, default: int) -> int:
    raw = os.environ.get(variable, "").strip()
    if not raw:
        return default
    try:
        value = int(raw.replace("_", ""))
    except ValueError:
        value = 0
    if value < 1:
        raise ConfigError(f"{variable} must be a positive whole number of characters, "
                          f"got '{raw[:40]}'")
    return value
