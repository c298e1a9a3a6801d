"""The quantisation attack: does forgetting by small weight edits survive 4- or 8-bit weights?

Unlearning that moves weights a little can be undone by rounding them to a coarse grid
(Zhang et al., 2024, "Catastrophic failure of LLM unlearning via quantization"). The attack
loads the unlearned model as a user would deploy it, quantises the weights of every linear
layer (not the LM head) to `bits`-bit integers with optimum-quanto (per-channel int8, or
int4 in groups; weights only, activations stay in floating point; works on CPU), and scores
the whole forget set before and after with the figures of the relearning attack (answer
Prob. exp(-mean NLL) and ROUGE-L recall of the greedy answer), the original target too
when it is known:

    recovered = (after - before) / (original - before)

What is quantised, by kind:
- plain model: the model;
- ULD: the target and the assistant (the target's first layers with their LoRA adapter, whose
  A and B matrices are linear layers too), then combined as before;
- offset: every member model.

Writes OUT/quantize.json (the summary), OUT/quantize_samples.jsonl (one row per forget pair)
and OUT/run_config.json. The model directory is only read.
"""

from __future__ import annotations

import json
import time
from collections.abc import Sequence
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

from torch import nn

from uldkit.attacks.attacked import AttackedModel, mean_scores, sample_rows, score_forget_set
from uldkit.attacks.relearn import recovered_share
from uldkit.data.sources import DataSource
from uldkit.data.types import QAPair
from uldkit.errors import ConfigError, ModelError, require
from uldkit.io import atomic_write_json, atomic_write_text
from uldkit.models.lm import CausalLM, LanguageModel
from uldkit.training.run_dir import RunDir
from uldkit.training.run_start import check_apart, start_run
from uldkit.uld.combination import LogitCombination
from uldkit.uld.logit_difference import LogitDifferenceModel
from uldkit.unlearning.load import load_language_model

BITS = (4, 8)
QTYPE_NAMES = {4: "qint4", 8: "qint8"}
KEPT_IN_FLOAT = ("*lm_head*",)  # as transformers' quanto integration leaves it
FEATURE = "uldkit attack quantize"


@dataclass
class QuantizeConfig(AttackedModel):
    bits: int = 8

    def check(self) -> None:
        if self.bits not in BITS:
            raise ConfigError(f"--bits must be 4 or 8, not {self.bits}")
        super().check()


def quantize_attack(config: QuantizeConfig, overwrite: bool = False) -> dict[str, Any]:
    """Run the attack; write and return the summary (module docstring)."""
    config.check()
    require("quantize", FEATURE)
    started = time.perf_counter()
    pairs = list(DataSource(config.data, people=config.people, seed=config.data_seed)
                 .load(config.forget))
    kind, original = config.kind_and_original()
    check_apart(Path(config.out), [config.model, original])
    with start_run(config.out, "attack quantize",
                   {**asdict(config), "original": original, "kind": kind},
                   overwrite=overwrite) as run:
        return _attack(config, run, pairs, kind, original, started)


def _attack(config: QuantizeConfig, run: RunDir, pairs: list[QAPair], kind: str,
            original: str | None, started: float) -> dict[str, Any]:
    lm = load_language_model(config.model, device=config.device)
    before = score_forget_set(lm, pairs, config)
    quantised = quantize_weights(lm, config.bits)
    after = score_forget_set(lm, pairs, config)
    del lm
    reference = None
    if original is not None:
        original_lm = load_language_model(original, device=config.device)
        reference = score_forget_set(original_lm, pairs, config)
    rows = sample_rows(pairs, before, after, reference)
    atomic_write_text(run.samples("quantize"),
                      "".join(json.dumps(row, ensure_ascii=False) + "\n" for row in rows))
    means = {"before": mean_scores(before), "after": mean_scores(after),
             "original": None if reference is None else mean_scores(reference)}
    summary = {
        "model": str(config.model),
        "kind": kind,
        "attack": f"{config.bits}-bit weights (optimum-quanto {QTYPE_NAMES[config.bits]})",
        "bits": config.bits,
        "quantised": quantised,
        "data": config.data,
        "forget": config.forget,
        "pairs": len(pairs),
        **means,
        "original_model": original,
        "recovered": recovered_share(means["before"], means["after"], means["original"]),
        "samples": RunDir(run.path).samples("quantize").name,
        "seconds": round(time.perf_counter() - started, 3),
    }
    atomic_write_json(run.summary("quantize"), summary)
    return summary


# ---- quantisation -------------------------------------------------------------------------------
def quantize_weights(lm: LanguageModel, bits: int) -> dict[str, Any]:
    """Quantise, in place, the weights of every linear layer of `lm`'s models (not the LM
    head) to `bits`-bit integers; what was quantised, checked on the modules themselves."""
    if bits not in BITS:
        raise ConfigError(f"--bits must be 4 or 8, not {bits}")
    quanto = require_quanto()
    qtype = quanto.qtypes[QTYPE_NAMES[bits]]
    roots = quantisable_modules(lm)
    try:
        for root in roots:
            quanto.quantize(root, weights=qtype, exclude=list(KEPT_IN_FLOAT))
            quanto.freeze(root)
    except (RuntimeError, ValueError, TypeError, NotImplementedError, AssertionError) as err:
        first = str(err).strip().splitlines()[0] if str(err).strip() else type(err).__name__
        raise ModelError(f"optimum-quanto cannot quantise this model to {bits} bits on this "
                         f"machine: {first}") from None
    return quantised_layers(roots, bits)


def require_quanto() -> Any:
    require("quantize", FEATURE)
    import optimum.quanto as quanto

    return quanto


def quantisable_modules(lm: LanguageModel) -> list[nn.Module]:
    """The torch modules that hold `lm`'s weights, each once."""
    if isinstance(lm, LogitDifferenceModel):
        roots = [lm.assistant]  # holds the target, its adapter and the assistant's layers
    elif isinstance(lm, LogitCombination):
        roots = [member.model for member in lm.members if isinstance(member, CausalLM)]
    elif isinstance(lm, CausalLM):
        roots = [lm.model]
    else:
        roots = []
    if not roots:
        raise ModelError(f"cannot find the weights of a {type(lm).__name__} to quantise")
    unique: dict[int, nn.Module] = {}
    for root in roots:
        unique.setdefault(id(root), root)
    return list(unique.values())


def quantised_layers(roots: Sequence[nn.Module], bits: int) -> dict[str, Any]:
    """How many linear layers hold `bits`-bit weights and how many stayed in floating point;
    ModelError when none was quantised."""
    from optimum.quanto import QModuleMixin

    names = QTYPE_NAMES[bits]
    quantised, kept = 0, []
    for root in roots:
        for name, module in root.named_modules():
            qtype = getattr(getattr(module, "weight", None), "qtype", None)
            if isinstance(module, QModuleMixin) and qtype is not None and qtype.name == names:
                quantised += 1
            elif isinstance(module, nn.Linear):
                kept.append(name)
    if quantised == 0:
        raise ModelError(f"no linear layer of the model was quantised to {bits} bits")
    return {"qtype": names, "linear_layers": quantised, "kept_in_float": sorted(set(kept))}
