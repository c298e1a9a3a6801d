"""An interrupted TOFU evaluation resumes from its finished samples: nothing finished is
computed again, and the result equals an uninterrupted run's exactly."""

from __future__ import annotations

import json
from collections import Counter

import pytest

from uldkit.errors import ConfigError
from uldkit.eval.tofu_eval import evaluate_tofu, tofu_eval_sets
from uldkit.eval.tofu_log import FORGET_SET, RETAIN_SET
from uldkit.training.journal import SampleJournal
from uldkit.unlearning.load import load_language_model

RUN = dict(batch_size=8, max_new_tokens=6, show_progress=False, model_name="target")


class Interrupted(Exception):
    pass


class CountingLM:
    """A LanguageModel that records the question of every row it scores and decodes, and can
    fail (as a crash would) at the `fail_at`-th scoring call that holds one of the questions
    `fail_in` (default: any)."""

    def __init__(self, lm, fail_at: int | None = None, fail_in=None) -> None:
        self.lm, self.tokenizer, self.fail_at, self.fail_in = lm, lm.tokenizer, fail_at, fail_in
        self.calls = 0
        self.scored: Counter[str] = Counter()
        self.decoded: Counter[str] = Counter()

    @property
    def device(self):
        return self.lm.device

    def logits(self, input_ids, attention_mask):
        questions = list(self._questions(input_ids, attention_mask))
        if self.fail_in is None or set(questions) & self.fail_in:
            self.calls += 1
        if self.fail_at is not None and self.calls >= self.fail_at:
            raise Interrupted
        self.scored.update(questions)
        return self.lm.logits(input_ids, attention_mask)

    def start_decoding(self, input_ids, attention_mask):
        self.decoded.update(self._questions(input_ids, attention_mask))
        return self.lm.start_decoding(input_ids, attention_mask)

    def _questions(self, input_ids, attention_mask):
        for ids, mask in zip(input_ids, attention_mask):
            text = self.tokenizer.decode(ids[mask.bool()].tolist(), skip_special_tokens=True)
            yield text.removeprefix("Question: ").split("\nAnswer:", 1)[0]


@pytest.fixture(scope="module")
def target(trained_world):
    return load_language_model(trained_world.target, device="cpu")


@pytest.fixture(scope="module")
def straight(trained_world, target, tmp_path_factory):
    lm = CountingLM(target)
    log, summary = evaluate_tofu(lm, trained_world.source, "forget10",
                                 out_dir=tmp_path_factory.mktemp("straight"), **RUN)
    return lm, log, summary


def _journal_samples(out, key: str) -> dict:
    path = out / "partial" / f"{key.removesuffix('.json')}.samples.jsonl"
    lines = path.read_text().splitlines()[1:]
    return {int(i): r for line in lines for i, r in json.loads(line)["samples"].items()}


def test_interrupted_evaluation_resumes_without_recomputing(trained_world, target, straight,
                                                            tmp_path):
    straight_lm, straight_log, straight_summary = straight
    sets = tofu_eval_sets(trained_world.source, "forget10")
    every = Counter(p.question for data in sets.values() for p in data)
    # Each sample is decoded at most once: not at all when the loss pass already shows its
    # whole greedy answer (generation starts from what scoring computed).
    assert set(straight_lm.decoded) <= set(every)
    assert set(straight_lm.decoded.values()) == {1}
    assert set(straight_lm.scored) == set(every)

    # Crash within the retain set, a few batches in (the forget set is done by then).
    out = tmp_path / "run"
    crashing = CountingLM(target, fail_at=10, fail_in={p.question for p in sets[RETAIN_SET]})
    with pytest.raises(Interrupted):
        evaluate_tofu(crashing, trained_world.source, "forget10", out_dir=out, **RUN)
    assert (out / "partial" / FORGET_SET).is_file()
    assert not (out / "summary.json").exists() and not (out / "eval_log_aggregated.json").exists()
    done = _journal_samples(out, RETAIN_SET)
    assert 0 < len(done) < len(sets[RETAIN_SET])
    assert set(done) <= set(range(len(sets[RETAIN_SET])))
    # A crash in the middle of a write leaves half a line: it is ignored and cut off.
    journal = out / "partial" / "eval_log.samples.jsonl"
    with open(journal, "ab") as handle:
        handle.write(b'{"samples": {"39": {"avg_gt_lo')

    resumed_lm = CountingLM(target)
    log, summary = evaluate_tofu(resumed_lm, trained_world.source, "forget10", out_dir=out,
                                 resume=True, **RUN)
    assert log == straight_log  # exactly: same batches, same numbers
    assert summary.figures == straight_summary.figures
    assert summary.resumed_sets == (FORGET_SET,)
    assert summary.resumed_samples == {RETAIN_SET: len(done)}
    # Nothing finished was computed again: neither the forget set nor the retain samples.
    remaining = Counter(p.question for key, data in sets.items() for i, p in enumerate(data)
                        if key != FORGET_SET and not (key == RETAIN_SET and i in done))
    assert set(resumed_lm.decoded) <= set(remaining)
    assert set(resumed_lm.decoded.values()) == {1}
    assert set(resumed_lm.scored) == set(remaining)
    # Finished: the per-set files replace the journals.
    assert sorted(p.name for p in (out / "partial").iterdir()) == sorted(sets)
    assert json.loads((out / "summary.json").read_text())["resumed_samples"] == {
        RETAIN_SET: len(done)}


def test_resume_with_other_settings_is_refused(trained_world, target, tmp_path):
    out = tmp_path / "run"
    # The forget set takes 11 scoring calls in 3 batches (5, 4, 2: shared-prefix batches
    # hold whole questions); failing at the 7th leaves the first batch journalled.
    with pytest.raises(Interrupted):
        evaluate_tofu(CountingLM(target, fail_at=7), trained_world.source, "forget10",
                      out_dir=out, **RUN)
    assert _journal_samples(out, FORGET_SET)
    with pytest.raises(ConfigError, match="max_new_tokens: 6 now 9"):
        evaluate_tofu(target, trained_world.source, "forget10", out_dir=out, resume=True,
                      **{**RUN, "max_new_tokens": 9})
    # Without resume the journal starts over.
    lm = CountingLM(target, fail_at=2)
    with pytest.raises(Interrupted):
        evaluate_tofu(lm, trained_world.source, "forget10", out_dir=out, **RUN)
    assert _journal_samples(out, FORGET_SET) == {}


def test_journal_reads_back_what_was_appended_and_drops_torn_tails(tmp_path):
    path = tmp_path / "set.samples.jsonl"
    journal = SampleJournal(path, {"model": "m"}, size=5)
    assert journal.start(resume=True) == {}  # nothing there yet
    journal.append({0: {"x": 0.1}, 3: {"x": 1 / 3}})
    journal.append({1: {"x": [1, 2], "t": "é\u2028"}})
    whole = path.read_bytes()
    assert SampleJournal(path, {"model": "m"}, 5).start(resume=True) == {
        0: {"x": 0.1}, 3: {"x": 1 / 3}, 1: {"x": [1, 2], "t": "é\u2028"}}

    for tail in (b'{"samples": {"2": {"x"', b"\xff\xfe\n", b'{"samples": {"7": {}}}\n',
                 b'{"samples": []}\n', b'{"samples": {"2": 5}}\n'):
        path.write_bytes(whole + tail + b'{"samples": {"4": {"x": 4}}}\n')
        recorded = SampleJournal(path, {"model": "m"}, 5).start(resume=True)
        assert sorted(recorded) == [0, 1, 3]  # the bad line and all after it are dropped
        assert path.read_bytes() == whole  # and cut off before anything is appended

    with pytest.raises(ConfigError, match="model: 'm' now 'n'"):
        SampleJournal(path, {"model": "n"}, 5).start(resume=True)
    path.write_bytes(b'{"journ')  # even the header is torn: start afresh
    assert SampleJournal(path, {"model": "m"}, 5).start(resume=True) == {}
    assert json.loads(path.read_text()) == {"journal": 1, "identity": {"model": "m"}}
