"""Membership-inference attacks: does the model still tell forget passages from unseen ones?

Every attack gives one score per passage with one sign convention: HIGHER = MORE LIKELY A
MEMBER (seen in training). With L(x) the mean negative log-likelihood per token of x:
- loss:            -L(x)
- zlib:            -L(x) / len(zlib.compress(x as UTF-8))   (Carlini et al., 2021)
- min_k:           mean of the k·n lowest token log-probs (Min-K% Prob, Shi et al., 2024)
- min_k_plus_plus: the same on (log p(x_t) - mu_t) / sigma_t, mu_t and sigma_t the mean and
                   standard deviation of log p over the vocabulary at t (Zhang et al., 2024)
- reference:       L_ref(x) - L(x), with a reference model (the literature's L(x) - L_ref(x),
                   negated to keep the convention)
k·n is floor(k · number of scored tokens), at least 1. All come from one forward pass per
batch (two with a reference model).

QA data: with questions beside the texts, each text is the answer to its question and only
its tokens (answer + EOS, after the question prompt, exactly as QA fine-tuning trains them)
are scored; zlib compresses the answer.

AUC is the ROC AUC of forget passages (members) against holdout passages (non-members): the
Mann-Whitney U statistic, a tie counting one half. 0.5 = no separation.

Verdict rule (MARGIN = 0.1): with a retain model (never trained on the forget passages), an
attack "still separates forget from holdout" when AUC - retain AUC > MARGIN, "separates them
in reverse" (forget passages look less familiar than unseen ones: over-unlearning) when
AUC - retain AUC < -MARGIN, and otherwise "does not separate them more than the retain
model". Without a retain model the same rule is applied against 0.5.
"""

from __future__ import annotations

import math
import zlib
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

import numpy as np

from uldkit.errors import DataError
from uldkit.training.journal import JournalledStages

if TYPE_CHECKING:  # scoring needs torch; the CLI reads this module's constants without it
    from uldkit.eval.token_scores import TokenScores
    from uldkit.models.lm import LanguageModel

MIA_STAGES = ("model", "retain_model")
ATTACKS = ("loss", "zlib", "min_k", "min_k_plus_plus", "reference")
DEFAULT_K = 0.2
MARGIN = 0.1
_STD_FLOOR = 1e-12  # a one-hot distribution has sigma 0


# --- per-sample scores ------------------------------------------------------------------------
def lowest_fraction_mean(values: np.ndarray, k: float) -> float:
    """Mean of the floor(k·n) (at least 1) smallest values."""
    if not 0 < k <= 1:
        raise ValueError(f"k must be in (0, 1], got {k}")
    if len(values) == 0:
        raise ValueError("no values")
    count = max(1, int(k * len(values)))
    return float(np.sort(values)[:count].mean())


def min_k_score(logprobs: np.ndarray, k: float = DEFAULT_K) -> float:
    return lowest_fraction_mean(np.asarray(logprobs, dtype=np.float64), k)


def min_k_plus_plus_score(
    logprobs: np.ndarray, vocab_mean: np.ndarray, vocab_std: np.ndarray, k: float = DEFAULT_K
) -> float:
    standardised = (np.asarray(logprobs) - np.asarray(vocab_mean)) / np.maximum(
        np.asarray(vocab_std), _STD_FLOOR
    )
    return lowest_fraction_mean(standardised, k)


def zlib_length(text: str) -> int:
    return len(zlib.compress(text.encode("utf-8")))


def zlib_score(loss: float, text: str) -> float:
    return -loss / zlib_length(text)


def attack_scores(
    scores: TokenScores, text: str, k: float = DEFAULT_K, reference_loss: float | None = None
) -> dict[str, float]:
    """Every attack's score for one passage (higher = more likely a member)."""
    out = {
        "loss": -scores.loss,
        "zlib": zlib_score(scores.loss, text),
        "min_k": min_k_score(scores.logprobs, k),
        "min_k_plus_plus": min_k_plus_plus_score(
            scores.logprobs, scores.vocab_mean, scores.vocab_std, k
        ),
    }
    if reference_loss is not None:
        out["reference"] = reference_loss - scores.loss
    return out


def mia_scores(
    lm: LanguageModel,
    texts: Sequence[str],
    k: float = DEFAULT_K,
    reference: LanguageModel | None = None,
    batch_size: int = 8,
    max_tokens: int = 512,
    questions: Sequence[str] | None = None,
) -> dict[str, np.ndarray]:
    """Attack name -> score per text (the reference attack only with a reference model).
    With `questions`, text i is the answer to question i (see the module's QA data)."""
    token_scores = _token_scores(lm, texts, questions, batch_size, max_tokens)
    reference_losses: list[float | None] = [None] * len(texts)
    if reference is not None:
        reference_losses = [s.loss for s in _token_scores(reference, texts, questions,
                                                          batch_size, max_tokens)]
    rows = [attack_scores(s, text, k, ref)
            for s, text, ref in zip(token_scores, texts, reference_losses)]
    names = [a for a in ATTACKS if rows and a in rows[0]]
    return {name: np.array([row[name] for row in rows], dtype=np.float64) for name in names}


def _token_scores(
    lm: LanguageModel, texts: Sequence[str], questions: Sequence[str] | None,
    batch_size: int, max_tokens: int,
) -> list[TokenScores]:
    from uldkit.eval.memorisation import qa_token_pairs
    from uldkit.eval.token_scores import score_continuations, score_passages

    if questions is None:
        return score_passages(lm, texts, batch_size, max_tokens)
    if len(questions) != len(texts):
        raise DataError(f"{len(questions)} questions for {len(texts)} answers")
    prefixes, answers = qa_token_pairs(lm.tokenizer, list(zip(questions, texts)), max_tokens)
    return score_continuations(lm, prefixes, answers, batch_size)


# --- AUC and verdicts ---------------------------------------------------------------------------
def roc_auc(member_scores: Sequence[float], nonmember_scores: Sequence[float]) -> float:
    """P(member score > non-member score) + P(equal) / 2, via the Mann-Whitney U statistic."""
    from scipy.stats import rankdata

    members = np.asarray(member_scores, dtype=np.float64)
    others = np.asarray(nonmember_scores, dtype=np.float64)
    if len(members) == 0 or len(others) == 0:
        raise DataError("AUC needs at least one member and one non-member sample")
    if np.isnan(members).any() or np.isnan(others).any():
        raise DataError("AUC: a score is NaN")
    ranks = rankdata(np.concatenate([members, others]))  # ties get their average rank
    u = ranks[: len(members)].sum() - len(members) * (len(members) + 1) / 2
    return float(u / (len(members) * len(others)))


def verdict(auc: float, retain_auc: float | None = None, margin: float = MARGIN) -> str:
    baseline = 0.5 if retain_auc is None else retain_auc
    against = "chance (0.5)" if retain_auc is None else f"the retain model ({retain_auc:.3f})"
    gap = auc - baseline
    if gap > margin:
        return f"still separates forget from holdout (AUC {auc:.3f} vs {against})"
    if gap < -margin:
        return (f"separates them in reverse: forget samples look less familiar than unseen "
                f"ones (AUC {auc:.3f} vs {against}; over-unlearning)")
    return f"does not separate forget from holdout more than {against} (AUC {auc:.3f})"


@dataclass(frozen=True)
class AttackResult:
    attack: str
    auc: float
    retain_auc: float | None
    separates: bool  # AUC - baseline > MARGIN
    verdict: str

    def to_dict(self) -> dict:
        return {"attack": self.attack, "auc": self.auc, "retain_auc": self.retain_auc,
                "separates": self.separates, "verdict": self.verdict}


@dataclass
class MiaReport:
    """Each attack's AUC (model and retain model) and the per-sample scores behind them."""

    attacks: list[AttackResult]
    k: float
    margin: float
    n_forget: int
    n_holdout: int
    samples: list[dict] = field(default_factory=list)
    inference: dict | None = None  # the audited model's inference settings (ULD's filter)

    def result(self, attack: str) -> AttackResult:
        for result in self.attacks:
            if result.attack == attack:
                return result
        raise KeyError(attack)

    def separating(self) -> list[str]:
        return [r.attack for r in self.attacks if r.separates]

    def reversed(self) -> list[str]:
        """Attacks whose AUC falls more than the margin below the baseline (over-unlearning)."""
        return [r.attack for r in self.attacks
                if r.auc - (0.5 if r.retain_auc is None else r.retain_auc) < -self.margin]

    def conclusion(self) -> str:
        names, backwards = self.separating(), self.reversed()
        if names:
            text = f"Still separating forget from holdout: {', '.join(names)}."
        else:
            text = ("No attack separates forget from holdout samples more than "
                    + ("the retain model does." if self.has_retain else "chance does."))
        if backwards:
            text += (f" In reverse (forget samples less familiar than unseen ones, a sign of "
                     f"over-unlearning): {', '.join(backwards)}.")
        return text

    @property
    def has_retain(self) -> bool:
        return any(r.retain_auc is not None for r in self.attacks)

    def summary_dict(self) -> dict:
        return {
            "k": self.k, "margin": self.margin, "n_forget": self.n_forget,
            "n_holdout": self.n_holdout,
            "attacks": [r.to_dict() for r in self.attacks],
            "separating": self.separating(),
            "conclusion": self.conclusion(),
            **({} if self.inference is None else {"inference": self.inference}),
        }


def mia_audit(
    lm: LanguageModel,
    forget_texts: Sequence[str],
    holdout_texts: Sequence[str],
    reference: LanguageModel | None = None,
    retain_lm: LanguageModel | None = None,
    k: float = DEFAULT_K,
    batch_size: int = 8,
    max_tokens: int = 512,
    margin: float = MARGIN,
    forget_questions: Sequence[str] | None = None,
    holdout_questions: Sequence[str] | None = None,
    stages: JournalledStages | None = None,
) -> MiaReport:
    """AUC of every attack, forget (members) vs holdout (non-members), for `lm` and, beside
    it, for the retain model; a verdict per attack (see the module's rule). With questions
    for both sets, the texts are their answers (see the module's QA data). With a journal
    behind `stages` (names: MIA_STAGES), a model already scored is not scored again."""
    if not forget_texts or not holdout_texts:
        raise DataError("the MIA audit needs forget and holdout passages")
    if (forget_questions is None) != (holdout_questions is None):
        raise DataError("give questions for both the forget and the holdout answers, or neither")
    texts = list(forget_texts) + list(holdout_texts)
    questions = None if forget_questions is None else [*forget_questions, *holdout_questions]
    n = len(forget_texts)
    stages = stages or JournalledStages(MIA_STAGES)

    def scored(model: LanguageModel) -> dict[str, list[float]]:
        found = mia_scores(model, texts, k, reference, batch_size, max_tokens, questions)
        return {name: values.tolist() for name, values in found.items()}

    model_scores = stages.run("model", lambda: scored(lm))
    retain_scores = None
    if retain_lm is not None:
        retain_scores = stages.run("retain_model", lambda: scored(retain_lm))
    attacks = []
    for name, scores in model_scores.items():
        auc = roc_auc(scores[:n], scores[n:])
        retain_auc = None
        if retain_scores is not None:
            retain_auc = roc_auc(retain_scores[name][:n], retain_scores[name][n:])
        baseline = 0.5 if retain_auc is None else retain_auc
        attacks.append(AttackResult(name, auc, retain_auc, auc - baseline > margin,
                                    verdict(auc, retain_auc, margin)))
    samples = []
    for index, text in enumerate(texts):
        sample = {"set": "forget" if index < n else "holdout",
                  "index": index if index < n else index - n, "text": text,
                  **({} if questions is None else {"question": questions[index]}),
                  "scores": {name: finite_or_none(s[index]) for name, s in model_scores.items()}}
        if retain_scores is not None:
            sample["retain_scores"] = {
                name: finite_or_none(s[index]) for name, s in retain_scores.items()
            }
        samples.append(sample)
    inference = getattr(lm, "inference_settings", None)
    return MiaReport(attacks, k, margin, n, len(holdout_texts), samples,
                     None if inference is None else dict(inference))


def finite_or_none(value: float) -> float | None:
    """JSON has no infinities: a score of -inf (an excluded token) is written as null."""
    value = float(value)
    return value if math.isfinite(value) else None
