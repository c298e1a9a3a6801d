"""ULD through transformers' `generate` (`ULDForCausalLM`) against uldkit's own decoding loop.

    python benchmarks/hf_generate_speed.py --size base --repeats 5 --threads 1

Same model, same prompts, greedy, 128 new tokens, K = 2, batch 1 and 8; the two runs
alternate so a busy moment hits both alike. Prints the median seconds of each and the ratio
(uldkit loop time / HF generate time: above 1 means HF generate is faster).
"""

from __future__ import annotations

import argparse
import statistics
import tempfile
import time
from pathlib import Path

import torch

from uldkit.data.sources import DataSource
from uldkit.models.generation import GenerationSettings, generate_ids
from uldkit.models.loading import load_model, save_model
from uldkit.models.tiny import build_tiny_llama
from uldkit.models.tokenizer import train_bpe_tokenizer
from uldkit.uld.assistant import ZeroCopyAssistant
from uldkit.uld.hf_model import ULDForCausalLM
from uldkit.uld.logit_difference import LogitDifferenceModel

PROMPT = "Question: Where was Morbel Fenanlo born, and what did the critics say?\nAnswer:"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--size", default="base", choices=["small", "base", "medium"])
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--new-tokens", type=int, default=128)
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    torch.manual_seed(0)
    source = DataSource("synthetic", people=40)
    with tempfile.TemporaryDirectory() as tmp:
        tokenizer = train_bpe_tokenizer(source.texts(), vocab_size=1024)
        model = build_tiny_llama(tokenizer, size=args.size, seed=0)
        model.config.max_position_embeddings = 512
        save_model(model, tokenizer, Path(tmp) / "target")
        model, tokenizer = load_model(Path(tmp) / "target")
    assistant = ZeroCopyAssistant(model, 2).eval()
    with torch.no_grad():  # nonzero adapters, so the assistant really differs from the target
        for param in assistant.lora_parameters():
            param.normal_(0, 0.02)
    uld = LogitDifferenceModel(assistant, tokenizer)
    hf = ULDForCausalLM.from_combination(uld, "(in memory)", {"kind": "uld"})
    # Greedy for a fixed length: no stop id ends a row early in either loop.
    tokenizer.eos_token_id = None
    hf.generation_config.eos_token_id = None
    settings = GenerationSettings(max_new_tokens=args.new_tokens, do_sample=False,
                                  stop_texts=())
    print(f"{args.size} model, {len(assistant.stack)} layers, K = 2, {args.new_tokens} new "
          f"tokens, {args.threads} thread(s), medians of {args.repeats}")
    for batch in (1, 8):
        prompts = [tokenizer(PROMPT)["input_ids"]] * batch
        ids = torch.tensor(prompts)

        def ours(prompts: list = prompts) -> int:
            return sum(len(row) for row in generate_ids(uld, prompts, settings))

        def theirs(ids: torch.Tensor = ids, batch: int = batch) -> int:
            out = hf.generate(input_ids=ids, attention_mask=torch.ones_like(ids),
                              max_new_tokens=args.new_tokens, min_new_tokens=args.new_tokens,
                              do_sample=False, pad_token_id=tokenizer.pad_token_id)
            return (out.shape[1] - ids.shape[1]) * batch

        with torch.no_grad():
            assert ours() == theirs() == batch * args.new_tokens  # warm-up, same work
            times: dict[str, list[float]] = {"ours": [], "theirs": []}
            for _ in range(args.repeats):
                for name, run in (("ours", ours), ("theirs", theirs)):
                    started = time.perf_counter()
                    run()
                    times[name].append(time.perf_counter() - started)
        ours_s, theirs_s = (statistics.median(times[k]) for k in ("ours", "theirs"))
        print(f"batch {batch}: uldkit loop {ours_s:.3f} s, HF generate {theirs_s:.3f} s, "
              f"HF generate speed / uldkit loop speed = {ours_s / theirs_s:.2f}x")


if __name__ == "__main__":
    main()
