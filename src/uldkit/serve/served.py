"""A model as the server sees it: its public name, context size, prompts, and α/τ views."""

from __future__ import annotations

import threading
from collections import OrderedDict
from collections.abc import Sequence
from typing import Any

from uldkit.data.formatting import encode_prompt
from uldkit.errors import UldkitError
from uldkit.models.context import context_length
from uldkit.models.lm import LanguageModel
from uldkit.serve.errors import ApiError

_MAX_VIEWS = 32


class ServedModel:
    def __init__(self, name: str, lm: LanguageModel, allow_request_settings: bool = True) -> None:
        self.name = name
        self.lm = lm
        self.context_length = context_length(lm)
        self.tunable = hasattr(lm, "with_settings")
        self.allow_request_settings = allow_request_settings
        self._views: OrderedDict[tuple[float | None, float | None], LanguageModel] = OrderedDict()
        self._lock = threading.Lock()

    @property
    def tokenizer(self) -> Any:
        return self.lm.tokenizer

    @property
    def settings(self) -> dict[str, float]:
        """The α and τ the model uses when a request names none (ULD models only)."""
        return {key: float(value) for key in ("alpha", "tau")
                if isinstance(value := getattr(self.lm, key, None), int | float)}

    def view(self, alpha: float | None, tau: float | None) -> LanguageModel:
        """The model with a request's α/τ; 400 when the model has no such settings."""
        if alpha is None and tau is None:
            return self.lm
        param = "alpha" if alpha is not None else "tau"
        if not self.tunable:
            raise ApiError(400, f"model '{self.name}' has no '{param}' setting (only ULD models "
                           "accept alpha and tau)", param=param, code="unsupported_parameter")
        if not self.allow_request_settings:
            raise ApiError(400, f"this server does not allow requests to change '{param}'",
                           param=param, code="unsupported_parameter")
        with self._lock:
            key = (alpha, tau)
            if key in self._views:
                self._views.move_to_end(key)
                return self._views[key]
            given = {k: v for k, v in (("alpha", alpha), ("tau", tau)) if v is not None}
            try:
                view = self.lm.with_settings(**given)  # type: ignore[attr-defined]
            except (UldkitError, ValueError) as err:
                raise ApiError(400, str(err), param=param) from None
            self._views[key] = view
            if len(self._views) > _MAX_VIEWS:
                self._views.popitem(last=False)
            return view

    def completion_prompt(self, prompt: str) -> list[int]:
        ids = self.tokenizer(prompt, add_special_tokens=True)["input_ids"]
        if not ids:
            raise ApiError(400, "'prompt' is empty", param="prompt")
        return ids

    def chat_prompt(self, messages: Sequence[dict[str, str]]) -> list[int]:
        """The chat template over all messages, or for a base model (no template) the QA
        prompt of the last user message, as the model was fine-tuned on."""
        tokenizer = self.tokenizer
        if getattr(tokenizer, "chat_template", None):
            try:
                text = tokenizer.apply_chat_template(
                    list(messages), tokenize=False, add_generation_prompt=True
                )
            except Exception as err:  # the template's own checks (jinja2 errors)
                raise ApiError(400, f"messages do not fit the model's chat template: {err}",
                               param="messages") from None
            return tokenizer(text, add_special_tokens=False)["input_ids"]
        questions = [m["content"] for m in messages if m["role"] == "user"]
        if not questions:
            raise ApiError(400, "'messages' must hold a user message", param="messages")
        return encode_prompt(tokenizer, questions[-1])
