"""Fuzz `uldkit serve`: 1,000 random and mutated requests from 300 concurrent clients.

Starts the real server (a subprocess on 127.0.0.1) over an untrained tiny model (or
`--model DIR`), asks one greedy question, fires the requests in `--rounds` rounds, asks the
greedy question again, and prints the status counts, 5xx responses other than 503 "busy",
transport errors, the server's resident memory after each round, and PASS/FAIL (exit 1 on
FAIL: any 500, a changed greedy answer, or memory still growing by more than `--max-growth-mib`
between the first and last rounds). The generator is tests/serve_fuzz_harness.py.

    python benchmarks/serve_fuzz.py
    python benchmarks/serve_fuzz.py --requests 3000 --clients 300 --rounds 5 --seed 7
"""

from __future__ import annotations

import argparse
import asyncio
import sys
import tempfile
import time
from pathlib import Path

from uldkit.data.sources import DataSource
from uldkit.models.loading import save_model
from uldkit.models.tiny import build_tiny_llama
from uldkit.models.tokenizer import train_bpe_tokenizer
from uldkit.serve.launch import ServerProcess

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tests"))
from serve_fuzz_harness import fire, greedy_answer, make_requests, resident_bytes  # noqa: E402

API_KEY = "fuzz-key"
PROMPT = "Question: Where was Ada born?\nAnswer:"


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", type=Path, help="model directory (default: untrained tiny)")
    parser.add_argument("--requests", type=int, default=1000)
    parser.add_argument("--clients", type=int, default=300)
    parser.add_argument("--rounds", type=int, default=4)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--max-growth-mib", type=float, default=64.0)
    args = parser.parse_args()

    with tempfile.TemporaryDirectory() as scratch:
        model = args.model
        if model is None:
            tokenizer = train_bpe_tokenizer(DataSource("synthetic", people=20).texts(),
                                            vocab_size=512)
            model = save_model(build_tiny_llama(tokenizer), tokenizer, Path(scratch) / "model")
        server_args = ["--model", str(model), "--api-key", API_KEY, "--max-tokens-cap", "8",
                       "--batch-wait-ms", "2", "--threads", "1", "--log-level", "warning"]
        with ServerProcess(server_args) as server:
            before = greedy_answer(server.url, API_KEY, PROMPT)
            per_round = args.requests // args.rounds
            outcomes, started = [], time.perf_counter()
            for index in range(args.rounds):
                requests = make_requests(per_round, seed=args.seed * 1000 + index,
                                         model=model.name, api_key=API_KEY)
                outcome = asyncio.run(fire(server.url, requests, args.clients))
                outcome.rss = resident_bytes(server.process.pid)
                outcomes.append(outcome)
                print(f"round {index + 1}: {dict(sorted(outcome.statuses.items(), key=str))}, "
                      f"hung up {outcome.hung_up}, server RSS {outcome.rss / 2**20:.0f} MiB",
                      flush=True)
            seconds = time.perf_counter() - started
            after = greedy_answer(server.url, API_KEY, PROMPT)
            log = server.log_text

    total = {}
    for outcome in outcomes:
        for status, count in outcome.statuses.items():
            total[status] = total.get(status, 0) + count
    errors = [e for o in outcomes for e in o.server_errors]
    transport = [e for o in outcomes for e in o.transport_errors]
    growth = (outcomes[-1].rss - outcomes[0].rss) / 2**20
    print(f"{per_round * args.rounds} requests from {args.clients} concurrent clients in "
          f"{seconds:.1f} s; statuses {dict(sorted(total.items(), key=str))}; "
          f"client hang-ups {sum(o.hung_up for o in outcomes)}")
    print(f"5xx other than 503: {len(errors)}; transport errors: {len(transport)}; "
          f"tracebacks in the server log: {log.count('Traceback')}")
    print(f"greedy answer unchanged: {after == before}; RSS growth first->last round: "
          f"{growth:+.1f} MiB")
    for line in (errors + transport)[:10]:
        print("  " + line)
    ok = not errors and not transport and after == before and growth < args.max_growth_mib \
        and "Traceback" not in log
    print("PASS" if ok else "FAIL")
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
