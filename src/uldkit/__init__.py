"""uldkit: make a language model forget, measure that it did, and serve the result.

Three calls are the front door; the command line is a shell over the same library:

    model, tokenizer = uldkit.load(path)                   # any model or unlearned run
    run = uldkit.unlearn(model, tokenizer, forget=..., method="uld", out=...)
    metrics = uldkit.evaluate(model, tokenizer, benchmark="tofu", split="forget10")

Heavy libraries (torch, transformers) are imported when a call needs them, so `import uldkit`
stays fast.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from dataclasses import fields
from pathlib import Path
from typing import TYPE_CHECKING, Any

from uldkit.errors import ConfigError

if TYPE_CHECKING:
    from transformers import PreTrainedModel, PreTrainedTokenizerBase

    from uldkit.unlearning.data import DocumentSpec, QASpec
    from uldkit.unlearning.run import UnlearnResult

__version__ = "0.1.0"
__all__ = ["__version__", "evaluate", "load", "unlearn"]


def load(
    path: str | os.PathLike,
    *,
    device: str | None = None,
    dtype: str | None = None,
    allow_pickle: bool = False,
    trust_remote_code: bool = False,
    **settings: Any,
) -> tuple[PreTrainedModel, PreTrainedTokenizerBase]:
    """(model, tokenizer) for a model directory, a GGUF file or an unlearned run.

    A plain model (or a run of a weight-editing method) loads as the transformers model it
    is; a ULD or offset run as a `ULDForCausalLM`, whose forward gives the unlearned scores,
    with `settings` such as `alpha` and `tau` overriding the run's. Weights load from
    safetensors only, after a safety scan.

    Example::

        model, tokenizer = uldkit.load(run_dir)
        ids = tokenizer("Question: Where was Morbel Fenanlo born?\\nAnswer:", return_tensors="pt")
        output = model.generate(**ids, max_new_tokens=8, do_sample=False)
        print(tokenizer.decode(output[0, ids["input_ids"].shape[1]:]))
    """
    from uldkit.unlearning.load import load_for_transformers

    return load_for_transformers(path, device=device, dtype=dtype, allow_pickle=allow_pickle,
                                 trust_remote_code=trust_remote_code, **settings)


def unlearn(
    model: PreTrainedModel | str | os.PathLike,
    tokenizer: PreTrainedTokenizerBase | None = None,
    *,
    forget: QASpec,
    out: str | os.PathLike,
    method: str = "uld",
    retain: QASpec | None = None,
    forget_documents: DocumentSpec | None = None,
    data: str = "synthetic",
    target_path: str | os.PathLike | None = None,
    hyperparameters: Mapping[str, Any] | None = None,
    resume: bool = False,
    overwrite: bool = False,
    show_progress: bool = True,
    device: str | None = None,
    allow_pickle: bool = False,
    trust_remote_code: bool = False,
    **settings: Any,
) -> UnlearnResult:
    """Unlearn `forget` from `model` with a registered method and save the run to `out`.

    `model` is a model directory or a loaded transformers model (then `target_path` says
    where it can be loaded again, for ULD and offset runs, which keep the target as it is).
    `forget` and `retain` are split names of `data` ("synthetic", a folder in TOFU's layout),
    files, `datasets.Dataset`s or lists of {"question", "answer"} dicts. `settings` are the
    method's hyperparameters (see `uldkit methods NAME`), training settings (epochs, lr,
    batch_size, seed, ...) and data settings (people, data_seed, max_length,
    retain_documents, ...), told apart by name; `hyperparameters` gives the method's as a
    mapping instead. `device`, `allow_pickle` and `trust_remote_code` apply to loading a
    model from its directory. The run's settings are recorded in its run_config.json; a
    `resume` with other settings is refused.

    Example::

        run = uldkit.unlearn(target_dir, forget="forget10", out=out_dir, method="grad_diff",
                             people=20, epochs=1, lr=5e-4)
        print(run.steps, "steps, final loss", round(run.final_loss, 3))
    """
    from uldkit.models.loading import load_model
    from uldkit.training.config import TrainConfig
    from uldkit.unlearning.catalog import get_method
    from uldkit.unlearning.data import DataSpec
    from uldkit.unlearning.run import UnlearnConfig
    from uldkit.unlearning.run import unlearn as run_unlearn

    method_cls = get_method(method)
    spec_names = {f.name for f in fields(DataSpec)}
    train_names = {f.name for f in fields(TrainConfig)}
    spec_settings = {k: settings.pop(k) for k in list(settings) if k in spec_names}
    train = {k: settings.pop(k) for k in list(settings) if k in train_names}
    spec = DataSpec(data=data, forget=forget, retain=retain,
                    forget_documents=forget_documents, **spec_settings)
    loading = dict(device=device, allow_pickle=allow_pickle,
                   trust_remote_code=trust_remote_code)
    target = None
    if isinstance(model, (str, os.PathLike)):
        if tokenizer is not None or (target_path is not None and target_path != model):
            target, loaded_tokenizer = load_model(model, **loading)
            tokenizer = tokenizer or loaded_tokenizer
        target_path = model if target_path is None else target_path
    else:
        target = model
        if tokenizer is None:
            raise ConfigError("unlearn() needs the model's tokenizer with an in-memory model")
    if target_path is None:
        target_path = getattr(model, "name_or_path", "") or ""
        if not (target_path and Path(target_path).is_dir()) and not method_cls.edits_weights:
            raise ConfigError(f"method '{method_cls.name}' keeps the target and records where "
                              "to load it again: pass target_path=<its directory>")
    config = UnlearnConfig(
        method=method_cls.name, model=os.fspath(target_path), out=os.fspath(out), data=data,
        forget=_recorded(spec.forget), retain=_recorded(spec.retain),
        forget_documents=_recorded(spec.forget_documents),
        retain_documents=_recorded(spec.retain_documents), people=spec.people,
        data_seed=spec.data_seed, max_length=spec.max_length,
        refusals=_recorded(spec.refusals, lines=True), hyperparameters={**(hyperparameters or {}), **settings},
        train_overrides=train, **loading,
    )
    return run_unlearn(config, resume=resume, overwrite=overwrite, show_progress=show_progress,
                       spec=spec, target=target, tokenizer=tokenizer)


def _recorded(value: Any, lines: bool = False) -> Any:
    """How run_config.json records a data setting: a name or path as given, data in memory
    by what it is and its size (a resume compares the records)."""
    if value is None or isinstance(value, str):
        return value
    if isinstance(value, os.PathLike):
        return os.fspath(value)
    if lines and isinstance(value, (list, tuple)):
        return [str(line) for line in value]  # refusal lines: few, and they are the setting
    size = getattr(value, "num_rows", None)
    if size is None:
        size = len(value) if hasattr(value, "__len__") else "?"
    return f"in memory: {type(value).__name__} of {size}"


def evaluate(
    model: Any,
    tokenizer: PreTrainedTokenizerBase | None = None,
    *,
    benchmark: str = "tofu",
    split: str = "forget10",
    data: str = "synthetic",
    retain_logs: str | os.PathLike | Mapping[str, Any] | None = None,
    out: str | os.PathLike | None = None,
    people: int = 40,
    data_seed: int = 0,
    **settings: Any,
) -> dict[str, Any]:
    """Score a model on a benchmark's own metrics; returns the summary (a dict).

    `model` is a path, a loaded transformers model (a `ULDForCausalLM` too) or a uldkit
    `LanguageModel`; other models (`retain_model`, `target`, `reference`) are given the
    same way (an in-memory transformers model with `tokenizer`). With `out`, the run is
    written there as `uldkit eval BENCHMARK` writes it (summary, per-sample log, and for
    muse and mia run_config.json; `resume=True` continues an interrupted run).

    benchmark "tofu": the TOFU authors' metrics on `split` of `data`, with forget quality
    when `retain_logs` (a retain model's TOFU log: its file or directory, or the log itself)
    is given; `people` and `data_seed` shape the synthetic world. `settings` go to the
    evaluation (batch_size, max_new_tokens, es_definition, model_name, resume, ...). The
    forget answers' perplexity is scored under `reference` (a path or loaded model; `uldkit
    eval tofu` gives the retain model); by default, for a model given by path, under the
    target its run names, else the model itself.

    benchmark "muse": VerbMem, KnowMem, PrivLeak and utility preserved, against
    `retain_model` (required) and `target`; benchmark "mia": membership inference, forget
    vs holdout passages, beside `retain_model` when given, with the reference attack when
    `reference` is. Their passages are the synthetic world's (`split` people are forgotten,
    `holdout` held out, by default as the models were fine-tuned) or your files
    (`forget_docs`, `holdout_docs`; for muse also `forget_qa`, `retain_qa`). Their settings
    are `uldkit eval muse|mia`'s options by name: muse's prompt_tokens, max_continuation,
    answer_tokens, knowmem, forget_qa_icl, retain_qa_icl; mia's k, filter, max_tokens;
    both batch_size, overwrite, resume, device, dtype, allow_pickle, trust_remote_code,
    `model_name` (how the summary names an in-memory model) and `on_resume` (called with
    the stages a resumed run read back).

    Example::

        audit = uldkit.evaluate(model, tokenizer, benchmark="mia", people=20, holdout=3)
        print(audit["conclusion"])
        metrics = uldkit.evaluate(model, tokenizer, split="forget10", people=20,
                                  max_new_tokens=8, show_progress=False)
        print(round(metrics["figures"]["model_utility"], 3))
    """
    if benchmark in ("muse", "mia"):
        if retain_logs is not None:
            raise ConfigError(f"retain_logs is TOFU's; {benchmark} takes retain_model")
        evaluate_documents = _evaluate_muse if benchmark == "muse" else _evaluate_mia
        return evaluate_documents(model, tokenizer, split=split, data=data, out=out,
                                  people=people, data_seed=data_seed, **settings)
    if benchmark != "tofu":
        raise ConfigError(f"unknown benchmark '{benchmark}' for evaluate(); known: tofu, muse, "
                          "mia (lm-eval tasks: `uldkit eval harness`)")
    from uldkit.data.sources import DataSource
    from uldkit.eval.log_formats import read_tofu_log
    from uldkit.eval.tofu_eval import evaluate_tofu
    from uldkit.eval.tofu_log import FORGET_SET

    lm = _language_model(model, tokenizer)
    settings = {**settings, **_fluency_reference(model, lm, settings)}
    retain_log = retain_logs
    if isinstance(retain_logs, (str, os.PathLike)):
        retain_log = read_tofu_log(retain_logs, (FORGET_SET,))[0]
    _, summary = evaluate_tofu(lm, DataSource(data, people=people, seed=data_seed), split,
                               retain_log, out_dir=out, **settings)
    return summary.to_dict()


def _evaluate_muse(
    model: Any, tokenizer: PreTrainedTokenizerBase | None, *, split: str, data: str,
    out: str | os.PathLike | None, people: int, data_seed: int, retain_model: Any = None,
    target: Any = None, holdout: int | None = None,
    forget_docs: str | os.PathLike | None = None, holdout_docs: str | os.PathLike | None = None,
    forget_qa: str | os.PathLike | None = None, retain_qa: str | os.PathLike | None = None,
    forget_qa_icl: str | os.PathLike | None = None,
    retain_qa_icl: str | os.PathLike | None = None, prompt_tokens: int = 32,
    max_continuation: int = 128, answer_tokens: int | None = None, knowmem: str = "muse",
    batch_size: int = 8, overwrite: bool = False, resume: bool = False,
    device: str | None = None, dtype: str | None = None, allow_pickle: bool = False,
    trust_remote_code: bool = False, model_name: str | None = None,
    on_resume: Any = None,
) -> dict[str, Any]:
    """benchmark="muse" of `evaluate`: `uldkit eval muse`'s work, its options by name."""
    from uldkit.eval.knowmem import check_knowmem_variant
    from uldkit.eval.muse import MuseSettings
    from uldkit.eval.runs import muse_config, muse_run, muse_splits

    if retain_model is None:
        raise ConfigError("MUSE needs retain_model: a model never trained on the forget set")
    files = dict(forget_docs=forget_docs, holdout_docs=holdout_docs, forget_qa=forget_qa,
                 retain_qa=retain_qa, forget_qa_icl=forget_qa_icl, retain_qa_icl=retain_qa_icl)
    splits = muse_splits(data=data, people=people, data_seed=data_seed, holdout=holdout,
                         forget=split, model_dirs=_model_dirs(retain_model, target, model),
                         **files)
    check_knowmem_variant(knowmem)
    settings = MuseSettings(prompt_tokens=prompt_tokens, max_continuation_tokens=max_continuation,
                            answer_tokens=answer_tokens, batch_size=batch_size, knowmem=knowmem)
    loading = dict(device=device, dtype=dtype, allow_pickle=allow_pickle,
                   trust_remote_code=trust_remote_code)
    lm = _language_model(model, tokenizer, **loading)
    retain_lm = _other_model(retain_model, model, lm, loading)
    target_lm = None if target is None else _other_model(target, model, lm, loading)
    names = {"model": _model_record(model, lm, model_name),
             "retain_model": _model_record(retain_model, retain_lm),
             "target": None if target is None else _model_record(target, target_lm)}
    recorded = {"data": data, "people": people, "data_seed": data_seed, "holdout": holdout,
                "forget": split, **{key: _path_record(value) for key, value in files.items()}}
    return muse_run(lm, splits, retain_lm, target_lm, settings, names=names,
                    config=muse_config(names, recorded, settings, device, dtype), out=out,
                    overwrite=overwrite, resume=resume, on_resume=on_resume)


def _evaluate_mia(
    model: Any, tokenizer: PreTrainedTokenizerBase | None, *, split: str, data: str,
    out: str | os.PathLike | None, people: int, data_seed: int, retain_model: Any = None,
    reference: Any = None, holdout: int | None = None,
    forget_docs: str | os.PathLike | None = None, holdout_docs: str | os.PathLike | None = None,
    k: float | None = None, filter: str | None = None, max_tokens: int = 512,
    batch_size: int = 8, overwrite: bool = False, resume: bool = False,
    device: str | None = None, dtype: str | None = None, allow_pickle: bool = False,
    trust_remote_code: bool = False, model_name: str | None = None,
    on_resume: Any = None,
) -> dict[str, Any]:
    """benchmark="mia" of `evaluate`: `uldkit eval mia`'s work, its options by name."""
    from uldkit.eval.mia import DEFAULT_K, MARGIN
    from uldkit.eval.runs import mia_passages, mia_run

    k = DEFAULT_K if k is None else k
    forget_texts, holdout_texts = mia_passages(
        data=data, people=people, data_seed=data_seed, holdout=holdout, forget=split,
        model_dirs=_model_dirs(retain_model, model), forget_docs=forget_docs,
        holdout_docs=holdout_docs)
    loading = dict(device=device, dtype=dtype, allow_pickle=allow_pickle,
                   trust_remote_code=trust_remote_code)
    lm = _language_model(model, tokenizer, **loading,
                         **({} if filter is None else {"filter": filter}))
    if filter is not None and not isinstance(model, (str, os.PathLike)):
        if not hasattr(lm, "with_settings"):
            raise ConfigError("filter is ULD's relative-top filter; this model has none")
        lm = lm.with_settings(filter=filter)
    retain_lm = None if retain_model is None else _other_model(retain_model, None, lm, loading)
    reference_lm = None if reference is None else _other_model(reference, None, lm, loading)
    names = {"model": _model_record(model, lm, model_name),
             "retain_model": None if retain_model is None else _model_record(retain_model,
                                                                              retain_lm),
             "reference": None if reference is None else _model_record(reference, reference_lm)}
    config = {
        **names, "data": data, "people": people, "data_seed": data_seed, "holdout": holdout,
        "forget": split, "forget_docs": _path_record(forget_docs),
        "holdout_docs": _path_record(holdout_docs), "k": k, "margin": MARGIN,
        "max_tokens": max_tokens, "device": device, "dtype": dtype,
        **({} if filter is None else {"filter": filter}),  # older runs resume unchanged
        "batch_size": batch_size,
    }
    return mia_run(lm, forget_texts, holdout_texts, reference=reference_lm,
                   retain_lm=retain_lm, k=k, batch_size=batch_size, max_tokens=max_tokens,
                   names=names, config=config, out=out, overwrite=overwrite, resume=resume,
                   on_resume=on_resume)


def _model_dirs(*models: Any) -> list[Path | None]:
    """The directories models were given as or loaded from (their run_config.json may
    record the held-out people)."""
    dirs: list[Path | None] = []
    for model in models:
        if isinstance(model, (str, os.PathLike)):
            dirs.append(Path(model))
        else:
            loaded_from = getattr(model, "name_or_path", None)
            dirs.append(Path(loaded_from) if isinstance(loaded_from, str) and loaded_from
                        and Path(loaded_from).is_dir() else None)
    return dirs


def _model_record(model: Any, lm: Any, name: str | None = None) -> str:
    """How a summary and run_config.json name a model: its path as given, else its name."""
    if name is not None:
        return name
    if isinstance(model, (str, os.PathLike)):
        return str(Path(model))
    return str(getattr(lm, "name", None) or type(model).__name__)


def _path_record(path: str | os.PathLike | None) -> str | None:
    return None if path is None else str(Path(path))


def _other_model(other: Any, model: Any, lm: Any, loading: dict[str, Any]) -> Any:
    """A second model (retain, target, reference) as a `LanguageModel`: `lm` itself when it
    is the evaluated model, and a transformers model with `lm`'s tokenizer."""
    if other is model or (isinstance(other, (str, os.PathLike))
                          and isinstance(model, (str, os.PathLike))
                          and Path(other).resolve() == Path(model).resolve()):
        return lm
    if isinstance(other, (str, os.PathLike)):
        return _language_model(other, None, **loading)
    return _language_model(other, lm.tokenizer)


def _fluency_reference(model: Any, lm: Any, settings: dict[str, Any]) -> dict[str, Any]:
    """The `reference` and `reference_name` evaluation scores forget answers under."""
    from uldkit.eval.answer_perplexity import fluency_reference_path

    reference = settings.get("reference")
    if reference is None and isinstance(model, (str, os.PathLike)):
        reference = fluency_reference_path(model)
        if Path(reference).resolve() == Path(model).resolve():
            return {"reference": lm, "reference_name": settings.get("reference_name", reference)}
    if isinstance(reference, (str, os.PathLike)):
        return {"reference": _language_model(reference, None),
                "reference_name": settings.get("reference_name", str(reference))}
    if reference is not None:
        from uldkit.models.lm import LanguageModel

        if not isinstance(reference, LanguageModel):  # a transformers model: lm's tokenizer
            return {"reference": _language_model(reference, lm.tokenizer)}
    return {}


def _language_model(model: Any, tokenizer: PreTrainedTokenizerBase | None,
                    **loading: Any) -> Any:
    """What evaluation scores: uldkit's `LanguageModel` over whatever the user holds;
    `loading` (device, dtype, ULD's filter, ...) applies to a model given by path."""
    from transformers import PreTrainedModel

    from uldkit.models.lm import LanguageModel
    from uldkit.uld.hf_model import ULDForCausalLM
    from uldkit.unlearning.load import as_language_model

    if isinstance(model, (str, os.PathLike)):
        loaded, loaded_tokenizer = load(model, **loading)
        return as_language_model(loaded, loaded_tokenizer, name=Path(model).name)
    if isinstance(model, PreTrainedModel) and not isinstance(model, ULDForCausalLM) \
            and tokenizer is None:
        raise ConfigError("evaluate() needs the model's tokenizer with an in-memory model")
    if not isinstance(model, (PreTrainedModel, LanguageModel)):
        raise ConfigError(f"evaluate() takes a path, a transformers model or a uldkit "
                          f"LanguageModel, not {type(model).__name__}")
    return as_language_model(model, tokenizer)
