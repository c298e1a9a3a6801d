"""The built-in synthetic world: determinism, splits, augmentation, the TOFU round trip, CLI."""

from __future__ import annotations

import json

import pytest
from typer.testing import CliRunner

import uldkit.cli as cli
from uldkit.cli import app
from uldkit.cli.data_cmds import data_app  # noqa: F401  (registers `uldkit data`)
from uldkit.data import generate_world, load_tofu, load_tofu_augmentation, read_records
from uldkit.data.synthetic import FAMOUS_AUTHORS, SYNTHETIC_SPLITS
from uldkit.errors import ConfigError, DataError

FORGETS = ("forget01", "forget05", "forget10")


@pytest.fixture(scope="module")
def world():
    return generate_world()


def _subjects(dataset) -> set[str]:
    return {pair.subject for pair in dataset}


def test_same_seed_same_world_other_seed_other_world(world):
    again = generate_world(40, seed=0)
    for name in SYNTHETIC_SPLITS:
        assert again.split(name) == world.split(name)
    assert again.augmentation("forget10") == world.augmentation("forget10")
    assert again.texts() == world.texts()
    other = generate_world(40, seed=1)
    assert [p.name for p in other.people] != [p.name for p in world.people]
    assert other.split("full").pairs != world.split("full").pairs


def test_default_sizes(world):
    sizes = {name: len(world.split(name)) for name in SYNTHETIC_SPLITS}
    assert sizes == {
        "forget01": 10, "forget05": 20, "forget10": 40, "retain90": 360, "retain95": 380,
        "retain99": 390, "full": 400, "retain_perturbed": 40, "real_authors_perturbed": 30,
        "world_facts_perturbed": 30, "general": 60,
    }
    assert len({p.name for p in world.people}) == 40


def test_forget_splits_nest_and_never_share_people_with_their_retain_split(world):
    people = {name: _subjects(world.split(name)) for name in SYNTHETIC_SPLITS[:6]}
    assert len(people["forget01"]) == 1 and len(people["forget10"]) == 4
    assert people["forget01"] < people["forget05"] < people["forget10"]
    for forget, retain in zip(FORGETS, ("retain99", "retain95", "retain90"), strict=True):
        assert not people[forget] & people[retain]
        assert people[forget] | people[retain] == {p.name for p in world.people}
    full = world.split("full")
    assert full.pairs == world.split("forget10").pairs + world.split("retain90").pairs


def test_every_forget_pair_has_evaluation_fields_and_short_answers(world):
    forget = world.split("forget10")
    assert forget.has_eval_fields()
    for pair in forget:
        assert len(pair.perturbed_answers) == 5 == len(set(pair.perturbed_answers))
        assert pair.subject in pair.question and pair.subject in pair.answer
        assert pair.paraphrased_question != pair.question
        assert pair.paraphrased_answer != pair.answer
        assert pair.answer not in pair.perturbed_answers
        assert len(pair.answer.split()) <= 20
    # perturbed answers share the paraphrase's wording: only the value differs
    pair = forget[0]
    prefix = pair.paraphrased_answer.split(pair.subject)[0]
    assert all(wrong.startswith(prefix) for wrong in pair.perturbed_answers)


def test_retain_perturbed_is_spread_over_retain_people(world):
    subset = world.split("retain_perturbed")
    assert subset.has_eval_fields()
    assert set(subset.pairs) <= set(world.split("retain90").pairs)
    assert len(_subjects(subset)) >= 30


def test_general_sets(world):
    general = world.split("general")
    for name in ("world_facts_perturbed", "real_authors_perturbed"):
        evaluated = world.split(name)
        assert evaluated.questions() <= general.questions()
        assert all(p.paraphrased_answer == p.answer and len(p.perturbed_answers) == 3
                   for p in evaluated)
    people = {p.name for p in world.people}
    famous = {name for name, _, _, _ in FAMOUS_AUTHORS}
    assert not people & famous
    assert not any(name in pair.question for name in people for pair in general)


def test_augmentation_is_fresh(world):
    for split in FORGETS:
        forget = world.split(split)
        augmentation = world.augmentation(split)
        assert set(augmentation.paraphrases) == forget.questions()
        for pair in forget:
            extra = augmentation.paraphrases[pair.question]
            wrong = augmentation.wrong_answers[pair.question]
            assert len(extra) == 2 and len(wrong) == 3
            evaluation_answers = {pair.answer, pair.paraphrased_answer, *pair.perturbed_answers}
            evaluation_questions = {pair.question, pair.paraphrased_question}
            assert not {p.answer for p in extra} & evaluation_answers
            assert not {p.question for p in extra} & evaluation_questions
            assert not set(wrong) & evaluation_answers
            assert all(p.paraphrased_answer is None and not p.perturbed_answers for p in extra)
    with pytest.raises(DataError, match="unknown forget split"):
        world.augmentation("retain90")


def test_biographies_and_texts(world):
    biographies = world.biographies()
    assert len(biographies) == 40
    for document, person in zip(biographies, world.people, strict=True):
        assert document.source == person.name
        assert person.values["birthplace"] in document.text
        assert person.values["best_book"] in document.text
    texts = world.texts()
    assert len(texts) == len(set(texts))
    for pair in world.split("full").pairs[:20] + world.split("general").pairs:
        assert pair.question in texts and pair.answer in texts


def test_save_then_load_tofu_round_trip(world, tmp_path):
    world.save(tmp_path)
    for name in SYNTHETIC_SPLITS:
        assert load_tofu(tmp_path, name) == world.split(name), name
    for split in FORGETS:
        assert load_tofu_augmentation(tmp_path, split) == world.augmentation(split)
    biographies = read_records(tmp_path / "biographies.jsonl")
    assert [r["text"] for r in biographies] == [d.text for d in world.biographies()]
    assert not (tmp_path / "full.json").exists()


def test_bad_sizes_and_unknown_split(world):
    with pytest.raises(ConfigError):
        generate_world(1)
    with pytest.raises(ConfigError):
        generate_world(10_000)
    with pytest.raises(DataError, match="unknown split 'forget20'"):
        world.split("forget20")
    tiny = generate_world(2, seed=3)
    assert len(tiny.split("forget10")) == 10 and len(tiny.split("retain90")) == 10


# --- command line ---------------------------------------------------------------------------
runner = CliRunner()


def test_cli_synth_writes_a_loadable_world(tmp_path):
    result = runner.invoke(app, ["data", "synth", "--out", str(tmp_path), "--people", "20",
                                 "--seed", "7"])
    assert result.exit_code == 0, result.output
    assert "20 people" in result.output and "forget10 20" in result.output
    assert load_tofu(tmp_path, "full") == generate_world(20, seed=7).split("full")
    records = json.loads((tmp_path / "forget01.json").read_text())
    assert set(records[0]) == {"question", "answer", "paraphrased_answer", "perturbed_answer",
                               "paraphrased_question", "subject"}


def test_cli_synth_refuses_a_directory_of_other_files(tmp_path):
    from uldkit.cli import main

    out = tmp_path / "world"
    out.mkdir()
    (out / "thesis.tex").write_text("a user's file")
    with pytest.raises(SystemExit) as done:
        main(["data", "synth", "--out", str(out), "--people", "4"])
    assert done.value.code == 2
    assert [p.name for p in out.iterdir()] == ["thesis.tex"]
    assert runner.invoke(app, ["data", "synth", "--out", str(out), "--people", "4",
                               "--overwrite"]).exit_code == 0
    assert not (out / "thesis.tex").exists()
    assert load_tofu(out, "full") == generate_world(4).split("full")
    # a world it wrote before is replaced without --overwrite
    assert runner.invoke(app, ["data", "synth", "--out", str(out), "--people", "6"]).exit_code == 0
    assert load_tofu(out, "full") == generate_world(6).split("full")


def test_cli_show_real_tofu_forget10(tofu_dir):
    result = runner.invoke(app, ["data", "show", "--data", str(tofu_dir),
                                 "--split", "forget10", "--rows", "2"])
    assert result.exit_code == 0, result.output
    assert "forget10: 400 rows" in result.output
    assert "with paraphrased answer: 400/400" in result.output
    assert "with perturbed answers: 400/400 (5 each)" in result.output
    assert "400/400 rows (all)" in result.output
    assert "first 2 of 400 rows" in result.output


def test_cli_show_synthetic_and_file(tmp_path):
    result = runner.invoke(app, ["data", "show", "--data", "synthetic", "--split", "retain90",
                                 "--rows", "0"])
    assert result.exit_code == 0, result.output
    assert "retain90: 360 rows" in result.output and "first" not in result.output
    path = tmp_path / "mine.jsonl"
    path.write_text('{"question": "Q?", "answer": "A."}\n')
    result = runner.invoke(app, ["data", "show", "--data", str(path)])
    assert result.exit_code == 0, result.output
    assert "mine: 1 rows" in result.output and "0/1 rows" in result.output


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--data", "synthetic", "--split", "forget20"], "unknown split 'forget20'"),
        (["--data", "/nonexistent/tofu"], "data path '/nonexistent/tofu' does not exist"),
        (["--data", "nonexistent.json"], "data path 'nonexistent.json' does not exist"),
        (["--data", "synthetic", "--tofu", "x"], "give the data once: --data and --tofu"),
        (["--file", "/nonexistent/x.json"], "/nonexistent/x.json: not found"),
    ],
)
def test_cli_show_errors_are_one_line_and_exit_2(args, message, monkeypatch, capsys):
    monkeypatch.setattr(cli, "_register_commands", lambda: None)
    with pytest.raises(SystemExit) as done:
        cli.main(["data", "show", *args])
    assert done.value.code == 2
    err = capsys.readouterr().err.strip()
    if args[0] == "--file":  # a deprecated alias: its warning line, then the error's line
        warning, err = err.split("\n", 1)
        assert warning.startswith("warning: --file is deprecated")
    assert message in err and "\n" not in err and "Traceback" not in err


def test_cli_show_empty_file_is_an_error(tmp_path):
    path = tmp_path / "empty.json"
    path.write_text("[]")
    result = runner.invoke(app, ["data", "show", "--data", str(path)])
    assert isinstance(result.exception, DataError) and "no records" in str(result.exception)


@pytest.mark.parametrize(("alias", "takes_folder"), [("--tofu", True), ("--synthetic", False)])
def test_cli_show_old_flags_still_work_with_a_warning(alias, takes_folder, tofu_dir):
    value = str(tofu_dir) if takes_folder else None
    args = [alias] + ([value] if value else [])
    result = runner.invoke(app, ["data", "show", *args, "--split", "forget10", "--rows", "0"])
    assert result.exit_code == 0, result.output
    assert f"warning: {alias} is deprecated and will be removed in the next release" in (
        result.stderr)
    expected = runner.invoke(app, ["data", "show", "--data", value or "synthetic",
                                   "--split", "forget10", "--rows", "0"])
    assert result.stdout == expected.stdout and "forget10:" in result.stdout


def test_cli_show_built_in_tofu_is_the_folder_uldkit_tofu_dir_names(monkeypatch, tofu_dir):
    monkeypatch.setenv("ULDKIT_TOFU_DIR", str(tofu_dir))
    result = runner.invoke(app, ["data", "show", "--data", "tofu", "--rows", "0"])
    assert result.exit_code == 0, result.output
    assert "forget10: 400 rows" in result.stdout
