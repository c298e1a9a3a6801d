"""ULD's relative-top filter: which tokens the logit difference applies to, in two variants.

Both decide from the target's log-probabilities alone (log p below), per position, with
V the vocabulary size and tau in [0, 1]:

- strict (uldkit's default): v is plausible when log p(v) >= max_u log p(u) + log tau.
  Scores are log-probabilities over the plausible tokens, log p - alpha * z_assistant
  renormalised there; every other token gets EXCLUDED_LOGPROB (probability 0), whether the
  model is scored or generates.
- reference (the ULD authors' code): the threshold is lowered until at least
  k = max(1, floor(tau * V)) tokens pass, i.e. a tenth of the vocabulary at their tau = 0.1.
  When scoring (losses, probabilities, membership inference), tokens outside the filter
  keep the target's log-probability (the assistant is not subtracted there) and nothing is
  excluded: the scores are one log-softmax over the whole vocabulary. When generating,
  tokens outside the filter are excluded, as in strict.

tau = 0 turns either filter off: log p - alpha * z_assistant over the whole vocabulary.
Under the strict filter, scoring sees the zeros generation sees; a membership-inference
attack then reads the target's own plausible set through them (see docs in
`uldkit.eval.calibration`).
"""

from __future__ import annotations

import math

import torch

from uldkit.errors import ConfigError

FILTERS = ("strict", "reference")
DEFAULT_FILTER = "strict"
# The authors' top_logit_filter, used when the reference filter is asked for without a tau.
REFERENCE_TAU = 0.1
EXCLUDED_LOGPROB = -1000.0


def check_filter(name: str) -> None:
    if name not in FILTERS:
        raise ConfigError(f"filter must be one of {', '.join(FILTERS)}, not {name!r}")


def plausible_tokens(target_logprobs: torch.Tensor, tau: float, filter: str) -> torch.Tensor:
    """Boolean mask [..., V]: the tokens the filter keeps (all of them at tau 0)."""
    check_filter(filter)
    if tau <= 0:
        return torch.ones_like(target_logprobs, dtype=torch.bool)
    threshold = target_logprobs.max(dim=-1, keepdim=True).values + math.log(tau)
    if filter == "reference":
        keep = max(1, int(tau * target_logprobs.shape[-1]))
        kth = target_logprobs.topk(keep, dim=-1).values[..., -1:]
        threshold = torch.minimum(threshold, kth)
    # The top token always passes (tau <= 1), so no row is left without a token.
    return target_logprobs >= threshold


def filtered_difference(
    target_logits: torch.Tensor, assistant_logits: torch.Tensor, alpha: float, tau: float,
    filter: str = DEFAULT_FILTER, generating: bool = False,
) -> torch.Tensor:
    """ULD's combined next-token scores under `filter` (see the module), in float32."""
    target_logprobs = torch.log_softmax(target_logits.float(), dim=-1)
    assistant = assistant_logits.float()
    if tau <= 0:  # unnormalised, as every consumer normalises (softmax, log-softmax, argmax)
        return target_logprobs - alpha * assistant
    plausible = plausible_tokens(target_logprobs, tau, filter)
    if filter == "reference" and not generating:
        subtracted = torch.where(plausible, alpha * assistant, torch.zeros_like(assistant))
        return torch.log_softmax(target_logprobs - subtracted, dim=-1)
    scores = (target_logprobs - alpha * assistant).masked_fill(~plausible, float("-inf"))
    return torch.log_softmax(scores, dim=-1).masked_fill(~plausible, EXCLUDED_LOGPROB)
