"""QA pairs from Hugging Face `datasets` objects and `save_to_disk` directories."""

from __future__ import annotations

import sys

import datasets
import pytest

from uldkit.data import from_hf_dataset, generate_world, load_tofu
from uldkit.errors import DataError, MissingExtraError

ROWS = [
    {"question": "Where was Ana born?", "answer": "Ana was born in Tresk.",
     "paraphrased_answer": "Tresk is Ana's birthplace.",
     "perturbed_answer": ["Ana was born in Calda.", "Ana was born in Fenn."]},
    {"question": "What does Ana write?", "answer": "Ana writes poetry.",
     "paraphrased_answer": "Poetry is what Ana writes.",
     "perturbed_answer": ["Ana writes horror.", "Ana writes comedy."]},
]


def test_dataset_in_memory():
    data = from_hf_dataset(datasets.Dataset.from_list(ROWS))
    assert len(data) == 2 and data.has_eval_fields()
    assert data[1].perturbed_answers == ("Ana writes horror.", "Ana writes comedy.")
    assert data[0].paraphrased_question is None


def test_dataset_dict_and_saved_directory(tmp_path):
    forget = generate_world(10, seed=2).split("forget10")
    records = [pair.to_dict() for pair in forget]  # uses the `perturbed_answers` synonym
    dataset_dict = datasets.DatasetDict({
        "forget": datasets.Dataset.from_list(records),
        "plain": datasets.Dataset.from_list([{"question": "Q?", "answer": "A."}]),
    })
    assert from_hf_dataset(dataset_dict, "forget").pairs == forget.pairs
    dataset_dict.save_to_disk(str(tmp_path / "dd"))
    loaded = from_hf_dataset(tmp_path / "dd", split="forget")
    assert loaded.pairs == forget.pairs and loaded.name == "forget"
    datasets.Dataset.from_list(ROWS).save_to_disk(str(tmp_path / "one"))
    assert len(from_hf_dataset(str(tmp_path / "one"))) == 2


def test_real_tofu_rows_survive_a_round_trip_through_datasets(tofu_dir, tmp_path):
    forget = load_tofu(tofu_dir, "forget01")
    rows = [{k: v for k, v in pair.to_dict().items() if v is not None} for pair in forget]
    datasets.Dataset.from_list(rows).save_to_disk(str(tmp_path / "tofu"))
    assert from_hf_dataset(tmp_path / "tofu").pairs == forget.pairs


def test_errors(tmp_path):
    dataset_dict = datasets.DatasetDict({
        "a": datasets.Dataset.from_list(ROWS), "b": datasets.Dataset.from_list(ROWS)})
    with pytest.raises(DataError, match="several splits: name one"):
        from_hf_dataset(dataset_dict)
    with pytest.raises(DataError, match="no split 'c'.*a, b"):
        from_hf_dataset(dataset_dict, "c")
    with pytest.raises(DataError, match="no column 'answer'"):
        from_hf_dataset(datasets.Dataset.from_list([{"question": "Q?", "reply": "A."}]))
    with pytest.raises(DataError, match="row 2: field 'answer' is empty"):
        from_hf_dataset(datasets.Dataset.from_list([{"question": "Q?", "answer": "A."},
                                                    {"question": "Q?", "answer": ""}]))
    with pytest.raises(DataError, match="not a directory"):
        from_hf_dataset(tmp_path / "absent")
    (tmp_path / "empty").mkdir()
    with pytest.raises(DataError, match="not a dataset saved with save_to_disk"):
        from_hf_dataset(tmp_path / "empty")
    with pytest.raises(DataError, match="got list"):
        from_hf_dataset(ROWS)


def test_missing_datasets_package_says_how_to_install(monkeypatch):
    monkeypatch.setitem(sys.modules, "datasets", None)  # every import of it now fails
    with pytest.raises(MissingExtraError, match=r'pip install "uldkit\[datasets\]"'):
        from_hf_dataset(ROWS)


def test_cli_data_names_a_hub_dataset_it_cannot_get_in_one_line(tmp_path):
    # `owner/name` that is no local path is a hub dataset; offline, the hub is not asked.
    import os
    import subprocess
    from pathlib import Path

    import uldkit

    env = {**os.environ, "HF_HUB_OFFLINE": "1",
           "PYTHONPATH": str(Path(uldkit.__file__).parents[1])}
    done = subprocess.run([sys.executable, "-m", "uldkit", "data", "show", "--data",
                           "someone/qa-set"], capture_output=True, text=True, env=env,
                          cwd=tmp_path, timeout=300)
    assert done.returncode == 2 and done.stdout == ""
    err = done.stderr.strip()
    assert "\n" not in err and err.startswith(
        "error: 'someone/qa-set' is not a local folder or file, and split 'forget10' of the "
        "hub dataset 'someone/qa-set' could not be loaded: ")
