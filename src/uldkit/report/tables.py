"""The report's tables as plain cells (rendered to Markdown and HTML by `report`).

- results: TOFU's headline figures (or MUSE's, in MUSE's column order), with exact
  memorisation, extraction strength and fluency of the forget answers when measured;
- membership inference: each attack's AUC of forget vs holdout beside the retain model's,
  and in words which attacks still separate them;
- relearning: held-out forget answers before and after the attack, the original model's,
  and how much came back.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field

from uldkit.eval.mia import MARGIN
from uldkit.report.results import AttackAuc, ModelResult, RunResults

ROLE_LABELS = {"target": "target (before unlearning)", "retain": "retain (never saw forget set)"}
TOFU_COLUMNS = ("Model", "Forget quality", "Model utility", "Forget ROUGE", "Forget Prob.")
MUSE_COLUMNS = (("VerbMem on D_f", "verbmem_forget"), ("KnowMem on D_f", "knowmem_forget"),
                ("PrivLeak", "privleak"), ("KnowMem on D_r", "knowmem_retain"),
                ("Utility preserved", "utility_preserved"))
MEMORISATION_COLUMNS = ("Forget EM", "Forget ES", "Fluency (n-gram entropy)",
                        "Longest repeat", "Answer PPL", "PPL ×retain")
ATTACK_TITLES = {"loss": "LOSS", "zlib": "zlib", "min_k": "Min-K%", "min_k_plus_plus": "Min-K%++",
                 "reference": "Reference"}

TOFU_NOTE = (
    "Forget quality: KS-test p-value of the forget-set truth ratios against the retain model "
    "(higher is better; at or above 0.05 the model is statistically indistinguishable from one "
    "never trained on the forget set). Model utility: harmonic mean of Prob., ROUGE and Truth "
    "Ratio on retain, real-author and world-fact questions (higher is better). Forget ROUGE and "
    "Prob.: how much of the forget answers the model still reproduces (closer to the retain "
    "model is better)."
)
MUSE_NOTE = (
    "MUSE: VerbMem on D_f: ROUGE-L F1 of the model's continuation of forget passages; KnowMem: "
    "ROUGE-L recall of answers to questions about the forget (D_f) and retain (D_r) "
    "passages; PrivLeak: (AUC - retain AUC) / retain AUC of Min-K% (k = 40%) membership "
    "inference on forget vs held-out passages, near 0 is ideal, negative means "
    "over-unlearned, positive under-unlearned; utility preserved: KnowMem on D_r relative to "
    "the target. Forget-set figures are best close to the retain model's."
)
MEMORISATION_NOTE = (
    "Forget EM (exact memorisation): share of forget-answer tokens the model predicts greedily "
    "given the true prefix. Forget ES (extraction strength): 1 - the smallest share of the "
    "answer an attacker must supply before greedy decoding completes it exactly (0: nothing "
    "can be extracted). Both lower is better, down to the retain model's. Fluency: n-gram "
    "entropy (bits) of the generated forget answers; gibberish and repetition make it fall. "
    "Longest repeat: mean over answers of the most words covered by one unit of 1-4 words "
    "repeated back to back (0: none). Answer PPL: perplexity of the generated forget answers "
    "under the retain model (else the target); PPL ×retain: that over the perplexity of the "
    "retain model's own answers under the same model (1: as fluent; aim ≤ 1.5)."
)


@dataclass(frozen=True)
class ReportTable:
    title: str
    headers: tuple[str, ...]
    rows: list[tuple[str, list[str]]]  # (the model's role, its cells)
    note: str = ""
    hover: list[list[str]] = field(default_factory=list)  # per cell, for HTML titles
    details: list[str] = field(default_factory=list)  # lines shown folded below the table
    text_columns: tuple[int, ...] = ()  # left-aligned columns besides the first


def ordered(run: RunResults) -> list[ModelResult]:
    order = {"method": 0, "target": 1, "retain": 2}
    return sorted(run.models, key=lambda model: order[model.role])


def model_label(model: ModelResult) -> str:
    """The model's name, with the filter and settings that made its figures (ULD)."""
    label = ROLE_LABELS.get(model.role, model.name)
    settings = model.inference
    if not settings or "filter" not in settings:
        return label
    parts = [f"{settings['filter']} filter"] + [
        f"{key}={settings[key]:g}" for key in ("alpha", "tau")
        if isinstance(settings.get(key), int | float)]
    return f"{label} ({', '.join(parts)})"


# --- results --------------------------------------------------------------------------------
def results_table(run: RunResults, duration: Callable[[float | None], str]) -> ReportTable:
    models = ordered(run)
    memorisation = any(m.exact_memorisation is not None or m.fluency is not None
                       for m in models)
    if run.is_muse:
        headers = ("Model", *(title for title, _ in MUSE_COLUMNS))
        note = MUSE_NOTE
    else:
        headers = TOFU_COLUMNS
        note = TOFU_NOTE
    headers += (MEMORISATION_COLUMNS if memorisation else ()) + ("Train time",)
    if memorisation:
        note += " " + MEMORISATION_NOTE
    rows = []
    for model in models:
        cells = [model_label(model)]
        if run.is_muse:
            figures = model.muse or {}
            cells += [_figure(model, f"muse/{key}", figures.get(key)) for _, key in MUSE_COLUMNS]
        else:
            cells.append(_figure(model, "forget_quality", model.forget_quality, "{:.2e}"))
            cells += [_figure(model, key, getattr(model, key))
                      for key in ("model_utility", "forget_rouge", "forget_prob")]
        if memorisation:
            fluency = model.fluency or {}
            where = "muse/" if run.is_muse else ""
            cells += [
                _figure(model, f"{where}forget_exact_memorisation", model.exact_memorisation),
                _figure(model, f"{where}forget_extraction_strength", model.extraction_strength),
                *(_figure(model, f"{where}forget_answer_fluency/{key}", fluency.get(key),
                          "{:.2f}")
                  for key in ("ngram_entropy", "longest_repeat_run", "perplexity",
                              "perplexity_ratio"))]
        cells.append(duration(model.train_seconds))
        rows.append((model.role, cells))
    title = "MUSE figures" if run.is_muse else "TOFU figures"
    if run.seeds:
        title += f", mean ± std over {len(run.seeds)} seeds"
        note += (f" Over seeds {', '.join(map(str, run.seeds))}: each cell is the mean ± the "
                 "sample standard deviation (n - 1); the seeds' values and min-max are in the "
                 "results file, and the plot's error bars span min to max.")
    return ReportTable(title, headers, rows, note)


def _figure(model: ModelResult, key: str, value: float | None, pattern: str = "{:.4f}") -> str:
    """A figure's cell: the value, or over seeds its mean ± sample std."""
    if value is None:
        return "—"
    spread = model.spread.get(key)
    if spread is None or spread.std is None:
        return pattern.format(value)
    return f"{pattern.format(spread.mean)} ± {pattern.format(spread.std)}"


# --- membership inference -------------------------------------------------------------------
def mia_table(run: RunResults) -> ReportTable | None:
    models = [model for model in ordered(run) if model.mia is not None]
    if not models:
        return None
    attacks: list[str] = []
    for model in models:
        attacks += [a.attack for a in model.mia.attacks if a.attack not in attacks]
    headers = ("Model", *(f"{ATTACK_TITLES.get(a, a)} AUC" for a in attacks),
               "Still separating forget from holdout")
    rows, hover, details = [], [], []
    for model in models:
        by_name = {a.attack: a for a in model.mia.attacks}
        cells, titles = [model_label(model)], [""]
        for name in attacks:
            result = by_name.get(name)
            cells.append("—" if result is None else _auc_cell(result))
            titles.append("" if result is None else result.verdict)
            if result is not None:
                details.append(f"{model.name}, {ATTACK_TITLES.get(name, name)}: {result.verdict}")
        separating = [ATTACK_TITLES.get(a.attack, a.attack) for a in model.mia.attacks
                      if a.separates]
        cells.append(", ".join(separating) if separating else "none")
        titles.append(model.mia.conclusion)
        rows.append((model.role, cells))
        hover.append(titles)
    texts = next((m.mia.texts for m in models if m.mia.texts), None)
    note = ("AUC of each attack telling forget (members) from held-out (never trained) "
            "samples; in brackets the retain model's, which never saw either. An attack "
            f"still separates them when its AUC exceeds the retain model's by more than {MARGIN}; "
            f"'reverse' marks an AUC more than {MARGIN} below it (forget samples look less "
            "familiar than unseen ones: over-unlearning).")
    if texts:
        note += f" Samples: {texts}."
    return ReportTable("Membership inference", headers, rows, note, hover, details,
                       text_columns=(len(headers) - 1,))


def _auc_cell(result: AttackAuc) -> str:
    baseline = 0.5 if result.retain_auc is None else result.retain_auc
    mark = ""
    if result.separates:
        mark = " separates"
    elif result.auc - baseline < -MARGIN:
        mark = " reverse"
    retain = "" if result.retain_auc is None else f" ({result.retain_auc:.3f})"
    return f"{result.auc:.3f}{retain}{mark}"


# --- relearning -----------------------------------------------------------------------------
def relearn_table(run: RunResults) -> ReportTable | None:
    models = [model for model in ordered(run) if model.relearn is not None]
    if not models:
        return None
    headers = ("Model", "Held-out Prob. before → after", "Held-out ROUGE before → after",
               "Original Prob. / ROUGE", "Recovered Prob. / ROUGE", "Attack")
    rows = []
    for model in models:
        r = model.relearn
        original = ("—" if r.original is None
                    else f"{_number(r.original['prob'])} / {_number(r.original['rouge'])}")
        attack = r.attack or "fine-tuning"
        if r.steps is not None and r.trained_on is not None:
            attack += f", {r.steps} steps on {r.trained_on} forget answers"
        if r.held_out is not None:
            attack += f" ({r.held_out} held out)"
        rows.append((model.role, [
            model_label(model),
            f"{_number(r.before['prob'])} → {_number(r.after['prob'])}",
            f"{_number(r.before['rouge'])} → {_number(r.after['rouge'])}",
            original,
            f"{_share(r.recovered['prob'])} / {_share(r.recovered['rouge'])}",
            attack,
        ]))
    note = ("The relearning attack fine-tunes the unlearned model on a few forget answers and "
            "scores the rest (held out): answer probability and ROUGE-L recall before and "
            "after. Recovered = (after - before) / (original - before): 0% means nothing came "
            "back, 100% the held-out answers are known as well as before unlearning.")
    return ReportTable("Relearning attack", headers, rows, note, text_columns=(len(headers) - 1,))


# --- quantisation ---------------------------------------------------------------------------
def quantize_table(run: RunResults) -> ReportTable | None:
    models = [model for model in ordered(run) if model.quantize]
    if not models:
        return None
    headers = ("Model", "Bits", "Forget Prob. before → after", "Forget ROUGE before → after",
               "Original Prob. / ROUGE", "Recovered Prob. / ROUGE")
    rows = []
    for model in models:
        for q in model.quantize:
            original = ("—" if q.original is None
                        else f"{_number(q.original['prob'])} / {_number(q.original['rouge'])}")
            rows.append((model.role, [
                model_label(model), str(q.bits),
                f"{_number(q.before['prob'])} → {_number(q.after['prob'])}",
                f"{_number(q.before['rouge'])} → {_number(q.after['rouge'])}",
                original,
                f"{_share(q.recovered['prob'])} / {_share(q.recovered['rouge'])}",
            ]))
    note = ("The quantisation attack rounds the unlearned model's linear weights (not the LM "
            "head; for ULD the target's and the assistant's) to 8- or 4-bit integers with "
            "optimum-quanto and scores the whole forget set: answer probability and ROUGE-L "
            "recall before and after. Recovered = (after - before) / (original - before).")
    return ReportTable("Quantisation attack", headers, rows, note)


def _number(value: float | None) -> str:
    return "—" if value is None else f"{value:.4f}"


def _share(value: float | None) -> str:
    return "—" if value is None else f"{value:.0%}"
