"""ULD's cost against the target alone and against full-weight unlearning (not a test).

    python benchmarks/uld_speed.py                    # 8-layer "base" model, 3 repeats
    python benchmarks/uld_speed.py --size small --repeats 5
    python benchmarks/uld_speed.py --size medium --repeats 1   # 512 wide: slower, realistic shares

Measured in one run, medians of `--repeats`:
  (a) training time of ULD (LoRA on the first K of N layers) against GradDiff on all weights,
      same target, same epochs and batch size, no checkpoints. ULD trains on more pairs than
      forget10 / retain90 (its forget side adds the paraphrases, its retain side the wrong
      answers), so GradDiff runs twice: on ULD's very training pairs (the same-data
      comparison) and on forget10 / retain90 alone. ULD also runs with LoRA dropout 0, to
      show what the dropout masks cost on a CPU (random numbers are slow there);
  (b) generation throughput (tokens/s, 128 new tokens, greedy, never stopped early) of the
      ULD model against the target alone, batch 1 and 8. Two separate passes would give at
      best N / (N + K); the paired pass (the first K layers once, on a doubled batch) beats
      that where a step is bound by weight reads and per-layer overhead, as at small batch;
  (c) the ULD model's KV-cached decoding against a loop re-scoring the whole sequence with
      the same model's scoring pass, 256 new tokens, batch 1 and 8 (`--cache-batches`);
  (d) the saved assistant's size, and the memory of the ULD model against the target alone:
      parameter + buffer bytes, and the process's resident memory (RSS) growth. LoRA's share
      of a layer shrinks as the model widens, so the adapter's size is also measured on a
      wider 8-layer model (hidden 1024, built and saved, not trained) and counted on
      Llama-2-7B's shapes (meta device: shapes only, no weights).
The model is built from a config with random weights: speed does not depend on the values.
"""

from __future__ import annotations

import argparse
import multiprocessing
import statistics
import tempfile
import time
from collections.abc import Callable
from dataclasses import replace
from pathlib import Path

import torch
from safetensors.torch import save_file
from transformers import LlamaConfig, LlamaForCausalLM

from uldkit.data.sources import DataSource
from uldkit.methods.base import UnlearnContext, UnlearnData
from uldkit.models.lm import CausalLM, LanguageModel
from uldkit.models.loading import load_model, save_model
from uldkit.models.tiny import build_tiny_llama
from uldkit.models.tokenizer import train_bpe_tokenizer
from uldkit.training.trainer import StreamData, Trainer
from uldkit.uld.assistant import ZeroCopyAssistant
from uldkit.uld.logit_difference import LogitDifferenceModel
from uldkit.unlearning.catalog import get_method
from uldkit.unlearning.run import resolve_train_config

PROMPT = "Question: Where was Draren Raknorrak born?\nAnswer:"


def rss_bytes() -> int:
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) * 1024
    return 0


def tensor_bytes(module: torch.nn.Module) -> int:
    """Bytes of distinct parameter and buffer storages (a shared tensor counts once)."""
    seen: dict[int, int] = {}
    for tensor in [*module.parameters(), *module.buffers()]:
        seen[tensor.untyped_storage().data_ptr()] = tensor.untyped_storage().nbytes()
    return sum(seen.values())


def paired_medians(runs: dict[str, Callable[[], object]], repeats: int) -> dict[str, float]:
    """Median seconds of each run; the runs alternate, so a busy moment hits them alike."""
    times: dict[str, list[float]] = {name: [] for name in runs}
    for _ in range(repeats):
        for name, run in runs.items():
            started = time.perf_counter()
            run()
            times[name].append(time.perf_counter() - started)
    return {name: statistics.median(values) for name, values in times.items()}


def memory_probe(target_dir: str) -> tuple[int, int, int, int]:
    """In a fresh process: RSS before loading the target, after decoding with the target alone,
    and after decoding with the ULD model (weights paged in, KV caches and activations
    allocated, as while serving); and the ULD model's parameter + buffer bytes."""
    torch.set_num_threads(1)
    before = rss_bytes()
    model, tokenizer = load_model(target_dir)
    prompt = tokenizer(PROMPT, return_tensors="pt")["input_ids"].repeat(8, 1)
    with torch.no_grad():
        decode_loop(CausalLM(model, tokenizer), prompt, 64)
        target = rss_bytes()
        assistant = ZeroCopyAssistant(model)
        decode_loop(LogitDifferenceModel(assistant.eval(), tokenizer), prompt, 64)
    return before, target, rss_bytes(), tensor_bytes(assistant)


def build_target(out: Path, size: str, source: DataSource) -> Path:
    tokenizer = train_bpe_tokenizer(source.texts(), vocab_size=1024)
    model = build_tiny_llama(tokenizer, size=size, seed=0)
    model.config.max_position_embeddings = 512
    save_model(model, tokenizer, out)
    return out


def train_seconds(method_name: str, target_dir: Path, data: UnlearnData, epochs: int,
                  hyperparameters: dict, streams: StreamData | None = None,
                  ) -> tuple[float, int, object, object]:
    """Seconds and steps of one run; `streams` replaces the method's own training pairs."""
    method_cls = get_method(method_name)
    method = method_cls(**hyperparameters)
    model, tokenizer = load_model(target_dir)
    plan = method.plan(model, tokenizer, data)
    if streams is not None:
        plan = replace(plan, data=streams)
    config = resolve_train_config(method_cls, {
        "epochs": epochs, "batch_size": 8, "grad_accum": 1, "show_progress": False,
        "warmup_ratio": 0.0,
    })
    result = Trainer(plan.model, plan.objective, plan.data, config,
                     pad_token_id=tokenizer.pad_token_id).train()
    return result.seconds, result.steps, (method, plan), tokenizer


def decode_loop(lm: LanguageModel, prompt: torch.Tensor, new_tokens: int) -> None:
    mask = torch.ones_like(prompt)
    decoding = lm.start_decoding(prompt, mask)
    for _ in range(new_tokens - 1):
        decoding.advance(decoding.scores.argmax(-1))


def no_cache_loop(lm: LanguageModel, prompt: torch.Tensor, new_tokens: int) -> None:
    ids = prompt
    for _ in range(new_tokens):
        scores = lm.logits(ids, torch.ones_like(ids))[:, -1]
        ids = torch.cat([ids, scores.argmax(-1, keepdim=True)], dim=1)


def adapter_share(model: torch.nn.Module, out: Path | None) -> tuple[int, float]:
    """Assistant layers and the adapter's bytes as a % of the target's parameter bytes.

    With `out`, the adapter is saved there and the file is measured; without (a meta-device
    model has no values), its tensors' bytes are counted.
    """
    assistant = ZeroCopyAssistant(model)
    if out is None:
        adapter = sum(p.numel() * p.element_size() for p in assistant.lora_parameters())
    else:
        save_file(assistant.lora_state_dict(), out)
        adapter = out.stat().st_size
    target = sum(p.numel() * p.element_size() for p in model.parameters())
    return assistant.num_layers, 100 * adapter / target


def wider_adapter_rows(tmp: Path, tokenizer) -> list[tuple[str, str, str]]:
    wide = LlamaForCausalLM(LlamaConfig(
        vocab_size=len(tokenizer), hidden_size=1024, intermediate_size=2752,
        num_hidden_layers=8, num_attention_heads=16, num_key_value_heads=16))
    wide_layers, wide_share = adapter_share(wide, tmp / "wide_adapter.safetensors")
    with torch.device("meta"):
        llama7b = LlamaForCausalLM(LlamaConfig(
            vocab_size=32000, hidden_size=4096, intermediate_size=11008,
            num_hidden_layers=32, num_attention_heads=32, num_key_value_heads=32))
    big_layers, big_share = adapter_share(llama7b, None)
    return [
        ("(d) saved assistant, hidden-1024 8-layer model", f"K = {wide_layers}, file size",
         f"{wide_share:.2f} % of target"),
        ("(d) assistant, Llama-2-7B shapes (counted)", f"K = {big_layers}",
         f"{big_share:.2f} % of target"),
    ]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--size", default="base", choices=["small", "base", "medium"])
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--epochs", type=int, default=2)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--cache-batches", type=lambda text: [int(b) for b in text.split(",")],
                        default=[1, 8], help="batch sizes for (c), e.g. 1,8")
    parser.add_argument("--parts", default="abcd", help="which of (a)-(d) to run, e.g. bc")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    torch.manual_seed(0)
    rows: list[tuple[str, str, str]] = []
    source = DataSource("synthetic", people=40)
    with tempfile.TemporaryDirectory() as tmp:
        target_dir = build_target(Path(tmp) / "target", args.size, source)

        if "d" in args.parts:
            # (d) memory, measured in a fresh process so nothing freed earlier is reused.
            with multiprocessing.get_context("spawn").Pool(1) as pool:
                rss_start, rss_target, rss_uld, uld_bytes = pool.apply(memory_probe,
                                                                       (str(target_dir),))
        model, tokenizer = load_model(target_dir)
        target_bytes = tensor_bytes(model)
        depth = len(model.model.layers)
        target_lm = CausalLM(model, tokenizer)
        assistant = ZeroCopyAssistant(model)
        uld = LogitDifferenceModel(assistant.eval(), tokenizer)
        layers = assistant.num_layers
        decoder = model.model
        copied = sum(tensor_bytes(m) for m in (decoder.embed_tokens, *decoder.layers[:layers],
                                                decoder.norm, model.lm_head))

        saved = None
        if "a" in args.parts:  # (a) training: GradDiff on all weights against ULD.
            data = UnlearnData(forget=source.load("forget10"), retain=source.load("retain90"),
                               augmentation=source.augmentation("forget10"), max_length=128)
            uld_plan = get_method("uld")().plan(*load_model(target_dir), data)
            uld_pairs = StreamData(
                {name: uld_plan.data.streams[name] for name in ("forget", "retain")},
                primary="forget")
            variants = {
                "grad_diff_same": ("grad_diff", {}, uld_pairs),
                "grad_diff_own": ("grad_diff", {}, None),
                "uld": ("uld", {}, None),
                "uld_no_dropout": ("uld", {"lora_dropout": 0.0}, None),
            }
            runs: dict[str, list[tuple[float, int]]] = {name: [] for name in variants}
            for _ in range(args.repeats):
                for name, (method_name, hp, streams) in variants.items():
                    seconds, steps, planned, tok = train_seconds(method_name, target_dir, data,
                                                                 args.epochs, hp, streams)
                    runs[name].append((seconds, steps))
                    if name == "uld" and saved is None:
                        method, plan = planned
                        saved = Path(tmp) / "uld"
                        method.save(plan, tok, saved, UnlearnContext(str(target_dir)))
            total = {n: statistics.median(s for s, _ in r) for n, r in runs.items()}
            steps = {n: r[0][1] for n, r in runs.items()}
            per_step = {n: total[n] / steps[n] for n in runs}
            forget_side = len(uld_pairs.streams["forget"])
            retain_side = len(uld_pairs.streams["retain"])

            def timing(name: str) -> str:
                return f"{total[name]:.2f} s  ({per_step[name] * 1000:.1f} ms/step)"

            rows += [
                ("(a) GradDiff, all weights, ULD's pairs",
                 f"{steps['grad_diff_same']} steps ({forget_side} forget, {retain_side} retain)",
                 timing("grad_diff_same")),
                ("(a) GradDiff, all weights, forget10/retain90", f"{steps['grad_diff_own']} steps",
                 timing("grad_diff_own")),
                (f"(a) ULD, LoRA on {layers} of {depth} layers", f"{steps['uld']} steps",
                 timing("uld")),
                ("(a) ULD, LoRA dropout 0", f"{steps['uld_no_dropout']} steps",
                 timing("uld_no_dropout")),
                ("(a) speed-up, same pairs and epochs", "GradDiff / ULD",
                 f"{total['grad_diff_same'] / total['uld']:.2f}x"),
                ("(a) speed-up, same pairs, dropout 0", "GradDiff / ULD",
                 f"{total['grad_diff_same'] / total['uld_no_dropout']:.2f}x"),
                ("(a) speed-up per optimizer step", "GradDiff / ULD",
                 f"{per_step['grad_diff_own'] / per_step['uld']:.2f}x"),
                ("(a) whole runs, GradDiff on fewer pairs", "GradDiff (forget10) / ULD",
                 f"{total['grad_diff_own'] / total['uld']:.2f}x"),
            ]

        prompt_ids = tokenizer(PROMPT, return_tensors="pt")["input_ids"]
        with torch.no_grad():
            for batch in (1, 8) if "b" in args.parts else ():  # (b) throughput, 128 tokens
                prompt = prompt_ids.repeat(batch, 1)
                decode_loop(uld, prompt, 8)  # warm-up
                timed = paired_medians({
                    "target": lambda p=prompt: decode_loop(target_lm, p, 128),
                    "uld": lambda p=prompt: decode_loop(uld, p, 128),
                }, args.repeats)
                t_target, t_uld = timed["target"], timed["uld"]
                rows += [
                    (f"(b) target alone, batch {batch}", "128 new tokens",
                     f"{batch * 128 / t_target:.0f} tokens/s"),
                    (f"(b) ULD model, batch {batch}", "128 new tokens",
                     f"{batch * 128 / t_uld:.0f} tokens/s"),
                    (f"(b) ULD / target throughput, batch {batch}",
                     f"two passes at best {depth}/{depth + layers} = "
                     f"{depth / (depth + layers):.2f}",
                     f"{t_target / t_uld:.2f}"),
                ]

            # (c) cached decoding against re-scoring the whole sequence.
            for batch in args.cache_batches if "c" in args.parts else ():
                prompt = prompt_ids.repeat(batch, 1)
                timed = paired_medians({
                    "cached": lambda p=prompt: decode_loop(uld, p, 256),
                    "plain": lambda p=prompt: no_cache_loop(uld, p, 256),
                }, args.repeats)
                t_cached, t_plain = timed["cached"], timed["plain"]
                rows += [
                    (f"(c) ULD, paired pass, one KV cache, batch {batch}", "256 new tokens",
                     f"{t_cached:.2f} s"),
                    (f"(c) ULD, no cache (re-score all), batch {batch}", "256 new tokens",
                     f"{t_plain:.2f} s"),
                    (f"(c) cache speed-up, batch {batch}", "no cache / cached",
                     f"{t_plain / t_cached:.2f}x"),
                ]

        if "d" not in args.parts:
            print_rows(rows, args, depth, layers)
            return
        if saved is None:  # (a) did not run: the adapters of an untrained assistant
            saved = Path(tmp) / "uld"
            saved.mkdir()
            save_file(ZeroCopyAssistant(load_model(target_dir)[0]).lora_state_dict(),
                      saved / "adapter.safetensors")
        adapter = (saved / "adapter.safetensors").stat().st_size
        rows += [
            ("(d) target parameters + buffers", "", f"{target_bytes / 2**20:.2f} MiB"),
            ("(d) saved assistant (adapter.safetensors)", "% of target",
             f"{adapter / 2**20:.3f} MiB = {100 * adapter / target_bytes:.2f} %"),
            ("(d) ULD model parameters + buffers", "target + adapters",
             f"{uld_bytes / 2**20:.2f} MiB = {100 * uld_bytes / target_bytes:.1f} % of target"),
            ("(d) a copied K-layer assistant would add", "embed + K layers + norm + head",
             f"{copied / 2**20:.2f} MiB"),
            *wider_adapter_rows(Path(tmp), tokenizer),
            ("(d) RSS growth, target loaded and decoding", "batch 8, 64 tokens",
             f"{(rss_target - rss_start) / 2**20:.1f} MiB"),
            ("(d) RSS growth, then the ULD model decoding", "the same",
             f"{(rss_uld - rss_target) / 2**20:.1f} MiB"),
            ("(d) process RSS, ULD model / target alone", "whole serving process",
             f"{rss_uld / rss_target:.3f}x"),
        ]

    print_rows(rows, args, depth, layers)


def print_rows(rows: list[tuple[str, str, str]], args: argparse.Namespace, depth: int,
               layers: int) -> None:
    print(f"ULD benchmark: {args.size} model, {depth} layers, K = {layers}, "
          f"{args.threads} threads, medians of {args.repeats}")
    width = max(len(r[0]) for r in rows)
    middle = max(len(r[1]) for r in rows)
    for name, detail, value in rows:
        print(f"{name:<{width}}  {detail:<{middle}}  {value}")


if __name__ == "__main__":
    main()
