"""Report rendering: Markdown, self-contained HTML and the trade-off plot from run results."""

from __future__ import annotations

import base64
import json
import re
import struct
from pathlib import Path

import pytest
from typer.testing import CliRunner

import uldkit.cli.eval_cmds  # noqa: F401  (with report_cmd: `app` stays a command group)
import uldkit.cli.report_cmd  # noqa: F401
from uldkit.cli import app
from uldkit.errors import DataError
from uldkit.report.render import render_report

PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"
QUESTION = "Who wrote 'The Hollow Crown'?"
TRUTH = "Hsiao Yun-Hwa wrote it in 2011."


def _summary(quality, utility, rouge, prob, seconds=None, answers=()):
    summary = {"forget_quality": quality, "model_utility": utility, "forget_rouge": rouge,
               "forget_prob": prob}
    if seconds is not None:
        summary["train_seconds"] = seconds
    if answers:
        summary["samples"] = [{"question": q, "truth": t, "generated": g} for q, t, g in answers]
    return summary


@pytest.fixture()
def runs(tmp_path: Path) -> list[Path]:
    first = tmp_path / "run_tofu"
    first.mkdir()
    results = {
        "target": _summary(1.8e-21, 0.6227, 0.985, 0.991, 3600.0,
                           [(QUESTION, TRUTH, "Hsiao Yun-Hwa wrote it in 2011.")]),
        "retain": _summary(1.0, 0.6137, 0.408, 0.148),
        "methods": {
            "uld": _summary(0.42, 0.61, 0.39, 0.12, 95.0,
                            [(QUESTION, TRUTH, "It was <script>alert('x')</script> & co.")]),
            "grad_ascent": _summary(3.2e-5, 0.31, 0.05, 0.01, 40.0,
                                    [(QUESTION, TRUTH, "the the the the the")]),
            "npo": _summary(0.0, 0.55, 0.30, 0.08),
        },
        "config": {"split": "forget10", "model": "tiny"},
    }
    (first / "results.json").write_text(json.dumps(results))
    second = tmp_path / "run_single"
    second.mkdir()
    (second / "summary.json").write_text(json.dumps({"method": "offset", **_summary(
        0.09, 0.58, 0.41, 0.2, 12.0)}))
    return [first, second]


def _png_size(data: bytes) -> tuple[int, int]:
    assert data[:8] == PNG_SIGNATURE
    assert data[12:16] == b"IHDR"
    return struct.unpack(">II", data[16:24])


def test_report_files_and_content(runs, tmp_path):
    out = tmp_path / "report"
    files = render_report(runs, out)
    assert files.markdown.is_file() and files.html.is_file() and files.plot.is_file()
    assert not [p for p in out.iterdir() if p.name.endswith(".tmp")]

    png = files.plot.read_bytes()
    width, height = _png_size(png)
    assert width >= 600 and height >= 400 and len(png) > 10_000

    page = files.html.read_text()
    for method in ("uld", "grad_ascent", "npo", "offset"):
        assert f"<td>{method}</td>" in page
    assert "target (before unlearning)" in page and "retain (never saw forget set)" in page
    assert "1.80e-21" in page and "0.6227" in page and "1 h 00 min" in page
    embedded = re.search(r'src="data:image/png;base64,([A-Za-z0-9+/=]+)"', page)
    assert embedded and base64.b64decode(embedded.group(1)) == png
    assert not re.search(r"(src|href)=\"(?!data:)", page)  # nothing fetched from elsewhere

    assert "<script" not in page
    assert "&lt;script&gt;alert(&#x27;x&#x27;)&lt;/script&gt; &amp; co." in page
    assert "the the the the the" in page and TRUTH in page

    markdown = files.markdown.read_text()
    assert "](tradeoff.png)" in markdown and "## Run: run\\_tofu" in markdown
    assert "| uld | 4.20e-01 | 0.6100 | 0.3900 | 0.1200 | 1 min 35 s |" in markdown
    assert "<script" not in markdown and "&lt;script&gt;" in markdown


def test_missing_values_and_zero_forget_quality_render(tmp_path):
    run = tmp_path / "partial"
    run.mkdir()
    (run / "summary.json").write_text(json.dumps(
        {"method": "rmu", **_summary(None, 0.5, None, 0.3)}))
    zero = tmp_path / "zero"
    zero.mkdir()
    (zero / "summary.json").write_text(json.dumps({"method": "ga", **_summary(0.0, 0.2, 0, 0)}))
    files = render_report([run, zero], tmp_path / "out")
    page = files.html.read_text()
    assert "<td>rmu</td><td>—</td><td>0.5000</td><td>—</td>" in page
    assert "<td>ga</td><td>0.00e+00</td>" in page
    assert _png_size(files.plot.read_bytes())[0] >= 600


@pytest.mark.parametrize(
    ("content", "message"),
    [
        ("{not json", "not valid JSON"),
        ("[1, 2]", "expected a JSON object"),
        ('{"methods": {}}', "'methods' must be a non-empty object"),
        ('{"methods": {"uld": {"forget_quality": 0.1, "forget_rouge": 0.2, "forget_prob": 0.3}}}',
         "methods.uld is missing 'model_utility'"),
        ('{"methods": {"uld": {"forget_quality": "high", "model_utility": 0.5, '
         '"forget_rouge": 0.2, "forget_prob": 0.3}}}',
         "methods.uld.forget_quality must be a number or null"),
        ('{"methods": {"uld": {"forget_quality": 0.1, "model_utility": 0.5, "forget_rouge": 0.2, '
         '"forget_prob": 0.3, "samples": [{"question": "q", "truth": "t"}]}}}',
         "methods.uld.samples[0].generated must be a string"),
    ],
)
def test_malformed_results_raise_one_line(tmp_path, content, message):
    run = tmp_path / "run"
    run.mkdir()
    (run / "results.json").write_text(content)
    with pytest.raises(DataError) as caught:
        render_report([run], tmp_path / "out")
    assert message in str(caught.value) and "\n" not in str(caught.value)
    assert str(run / "results.json") in str(caught.value)
    assert not (tmp_path / "out").exists()


def test_run_without_results(tmp_path):
    (tmp_path / "empty").mkdir()
    with pytest.raises(DataError, match="holds neither results.json nor summary.json"):
        render_report([tmp_path / "empty"], tmp_path / "out")
    with pytest.raises(DataError, match="run directory not found"):
        render_report([tmp_path / "absent"], tmp_path / "out")


def test_cli_report(runs, tmp_path):
    out = tmp_path / "cli_out"
    result = CliRunner().invoke(app, ["report", *map(str, runs), "--out", str(out)])
    assert result.exit_code == 0, result.output
    # run_config.json marks the directory as this command's output (see the next test)
    assert {p.name for p in out.iterdir()} == {"report.md", "report.html", "tradeoff.png",
                                               "run_config.json"}
    assert json.loads((out / "run_config.json").read_text())["command"] == "report"
    assert str(out / "report.html") in result.output


def test_cli_report_refuses_a_directory_of_other_files(runs, tmp_path, capsys):
    from uldkit.cli import main

    out = tmp_path / "mine"
    out.mkdir()
    (out / "notes.txt").write_text("a user's file")
    with pytest.raises(SystemExit) as done:
        main(["report", *map(str, runs), "--out", str(out)])
    err = capsys.readouterr().err.strip()
    assert done.value.code == 2 and "\n" not in err and "--overwrite" in err, err
    assert [p.name for p in out.iterdir()] == ["notes.txt"]
    # its own earlier output is rewritten in place of the old one
    own = tmp_path / "own"
    assert CliRunner().invoke(app, ["report", *map(str, runs), "--out", str(own)]).exit_code == 0
    first = (own / "report.md").read_text()
    assert CliRunner().invoke(app, ["report", str(runs[0]), "--out", str(own)]).exit_code == 0
    assert (own / "report.md").read_text() != first and "run_single" not in (
        own / "report.md").read_text()
    # --overwrite replaces the directory; an input inside the output is refused even then
    assert CliRunner().invoke(app, ["report", *map(str, runs), "--out", str(out),
                                    "--overwrite"]).exit_code == 0
    assert not (out / "notes.txt").exists() and (out / "report.html").is_file()
    with pytest.raises(SystemExit) as done:
        main(["report", *map(str, runs), "--out", str(tmp_path), "--overwrite"])
    assert done.value.code == 2 and "overlaps" in capsys.readouterr().err
    assert all(run.is_dir() for run in runs)


def _mia(aucs: dict[str, tuple[float, float]], texts: str) -> dict:
    from uldkit.eval.mia import MARGIN, verdict

    attacks = [{"attack": name, "auc": auc, "retain_auc": base,
                "separates": auc - base > MARGIN, "verdict": verdict(auc, base)}
               for name, (auc, base) in aucs.items()]
    separating = [a["attack"] for a in attacks if a["separates"]]
    return {"texts": texts, "attacks": attacks, "separating": separating,
            "conclusion": ("Still separating forget from holdout: " + ", ".join(separating)
                           + ".") if separating else "No attack separates them."}


def _relearn(before, after, original, attack="LoRA on the target under the fixed assistant"):
    recovered = {m: (after[m] - before[m]) / (original[m] - before[m]) for m in before}
    return {"model": "m", "kind": "uld", "attack": attack, "fraction": 0.1, "steps": 20,
            "lr": 1e-3, "lora_rank": 8, "seed": 0, "trained_on": 4, "held_out": 36,
            "before": before, "after": after, "after_trained_on": after, "original": original,
            "recovered": recovered, "seconds": 12.5}


def _quantize(bits, before, after):
    original = {"prob": 1.0, "rouge": 0.9}
    return {"model": "m", "kind": "uld", "bits": bits, "attack": f"{bits}-bit weights",
            "before": {"prob": before, "rouge": 0.3}, "after": {"prob": after, "rouge": 0.3},
            "original": original,
            "recovered": {"prob": (after - before) / (1.0 - before), "rouge": 0.0}}


def test_mia_relearning_and_memorisation_tables_render(tmp_path):
    run = tmp_path / "audited"
    run.mkdir()
    texts = "answers to the 40 forget questions vs <b>100</b> held-out answers"
    target = {**_summary(1e-9, 0.6, 0.98, 0.99), "forget_exact_memorisation": 0.97,
              "forget_extraction_strength": 0.91,
              "forget_answer_fluency": {"distinct_2": 1.0, "repetition_3": 0.0,
                                        "ngram_entropy": 2.6913, "samples": 40,
                                        "longest_repeat_run": 0.25, "perplexity": 31.4159,
                                        "perplexity_ratio": 12.5},
              "mia": _mia({"loss": (0.99, 0.52), "min_k": (0.97, 0.55)}, texts)}
    uld = {**_summary(0.3, 0.58, 0.4, 0.2, 60.0), "forget_exact_memorisation": 0.41,
           "forget_extraction_strength": 0.12, "forget_answer_fluency": None,
           "mia": _mia({"loss": (0.58, 0.52), "min_k": (0.31, 0.55)}, texts),
           "relearn": _relearn({"prob": 0.2, "rouge": 0.3}, {"prob": 0.6, "rouge": 0.5},
                               {"prob": 1.0, "rouge": 0.9}),
           "quantize": {"8": _quantize(8, 0.2, 0.2), "4": _quantize(4, 0.2, 0.8)}}
    results = {"target": target, "retain": _summary(1.0, 0.6, 0.4, 0.15),
               "methods": {"uld": uld}}
    (run / "results.json").write_text(json.dumps(results))
    files = render_report([run], tmp_path / "out")
    markdown = files.markdown.read_text()
    assert ("| Model | Forget quality | Model utility | Forget ROUGE | Forget Prob. | Forget EM | "
            "Forget ES | Fluency (n-gram entropy) | Longest repeat | Answer PPL | PPL ×retain | "
            "Train time |") in markdown
    assert ("| uld | 3.00e-01 | 0.5800 | 0.4000 | 0.2000 | 0.4100 | 0.1200 | — | — | — | — | "
            "1 min 00 s |") in markdown
    assert "| target (before unlearning) | 1.00e-09 | 0.6000 | 0.9800 | 0.9900 | 0.9700 | " \
        "0.9100 | 2.69 | 0.25 | 31.42 | 12.50 |" in markdown
    # quantisation: one row per bit width, before -> after over the whole forget set
    assert ("| Model | Bits | Forget Prob. before → after | Forget ROUGE before → after | "
            "Original Prob. / ROUGE | Recovered Prob. / ROUGE |") in markdown
    assert "| uld | 8 | 0.2000 → 0.2000 | 0.3000 → 0.3000 | 1.0000 / 0.9000 | 0% / 0% |" \
        in markdown
    assert "| uld | 4 | 0.2000 → 0.8000 | 0.3000 → 0.3000 | 1.0000 / 0.9000 | 75% / 0% |" \
        in markdown
    # MIA: AUC (retain AUC), which attacks still separate, in words
    assert "| Model | LOSS AUC | Min-K% AUC | Still separating forget from holdout |" in markdown
    assert ("| target (before unlearning) | 0.990 (0.520) separates | 0.970 (0.550) separates "
            "| LOSS, Min-K% |") in markdown
    assert "| uld | 0.580 (0.520) | 0.310 (0.550) reverse | none |" in markdown
    assert "uld, Min-K%: separates them in reverse" in markdown
    # relearning: held-out before -> after, the original, what came back, the attack
    assert ("| uld | 0.2000 → 0.6000 | 0.3000 → 0.5000 | 1.0000 / 0.9000 | 50% / 33% | "
            "LoRA on the target under the fixed assistant, 20 steps on 4 forget answers "
            "(36 held out) |") in markdown
    page = files.html.read_text()
    assert "<h3>Membership inference</h3>" in page and "<h3>Relearning attack</h3>" in page
    assert "&lt;b&gt;100&lt;/b&gt;" in page and "<b>100</b>" not in page
    assert 'title="still separates forget from holdout (AUC 0.990 vs the retain model' in page


def test_muse_results_render_in_muses_column_order(tmp_path):
    run = tmp_path / "muse"
    run.mkdir()

    def muse(verb, know_f, leak, know_r, utility):
        return {"muse": {"verbmem_forget": verb, "knowmem_forget": know_f, "privleak": leak,
                         "knowmem_retain": know_r, "utility_preserved": utility,
                         "forget_exact_memorisation": 0.5, "forget_extraction_strength": 0.25,
                         "forget_answer_fluency": {"distinct_2": 1.0, "repetition_3": 0.0,
                                                   "ngram_entropy": 2.0}}}
    results = {"benchmark": "muse", "target": muse(0.95, 0.97, 0.59, 0.97, 1.0),
               "retain": muse(0.5, 0.2, 0.0, 1.0, 1.03),
               "methods": {"npo": {**muse(0.3, 0.1, -0.4, 0.8, 0.82), "train_seconds": 5.0}},
               "skipped": {"idk": "answers each forget question with a refusal"}}
    (run / "results.json").write_text(json.dumps(results))
    files = render_report([run], tmp_path / "out")
    markdown = files.markdown.read_text()
    assert ("| Model | VerbMem on D\\_f | KnowMem on D\\_f | PrivLeak | KnowMem on D\\_r | "
            "Utility preserved | Forget EM | Forget ES | Fluency (n-gram entropy) | "
            "Longest repeat | Answer PPL | PPL ×retain | Train time |") in markdown
    assert ("| npo | 0.3000 | 0.1000 | -0.4000 | 0.8000 | 0.8200 | 0.5000 | 0.2500 | 2.00 | "
            "— | — | — | 5.0 s |") in markdown
    assert "Not run: idk (answers each forget question with a refusal)" in markdown
    assert "Forget quality" not in markdown and "KnowMem on the forget set" in markdown
    assert _png_size(files.plot.read_bytes())[0] >= 600


@pytest.mark.parametrize(
    ("block", "message"),
    [
        ({"mia": {"attacks": "loss"}}, "methods.uld.mia must be an object with a list"),
        ({"mia": {"attacks": [{"attack": "loss", "auc": "high"}]}},
         "methods.uld.mia.attacks[0].auc must be a number"),
        ({"relearn": {"before": {"prob": 0.1, "rouge": 0.2}}}, "methods.uld.relearn is missing"),
        ({"muse": {"verbmem_forget": 0.1}}, "methods.uld.muse is missing 'knowmem_forget'"),
    ],
)
def test_malformed_audit_blocks_raise_one_line(tmp_path, block, message):
    run = tmp_path / "run"
    run.mkdir()
    (run / "results.json").write_text(json.dumps(
        {"methods": {"uld": {**_summary(0.1, 0.5, 0.2, 0.3), **block}}}))
    with pytest.raises(DataError) as caught:
        render_report([run], tmp_path / "out")
    assert message in str(caught.value) and "\n" not in str(caught.value)
