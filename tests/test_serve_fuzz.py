"""Fuzz a real `uldkit serve` process: random and mutated requests from many clients at once.

No response may be a 500 (a 503 "busy" is an honest answer under load), the server must give
a plain greedy request the same answer afterwards as before, and its memory must level off.
The suite runs a small round; ULDKIT_SERVE_FUZZ_FULL=1 runs the issue's 1,000 requests from
300 clients (benchmarks/serve_fuzz.py runs that too and prints figures).
"""

from __future__ import annotations

import asyncio
import os
import sys
from pathlib import Path

import pytest

from uldkit.data.sources import DataSource
from uldkit.models.loading import save_model
from uldkit.models.tiny import build_tiny_llama
from uldkit.models.tokenizer import train_bpe_tokenizer
from uldkit.serve.launch import ServerProcess

sys.path.insert(0, str(Path(__file__).parent))
from serve_fuzz_harness import fire, greedy_answer, make_requests, resident_bytes  # noqa: E402

FULL = os.environ.get("ULDKIT_SERVE_FUZZ_FULL") == "1"
REQUESTS, CLIENTS = (1000, 300) if FULL else (160, 40)
API_KEY = "fuzz-key"
PROMPT = "Question: Where was Ada born?\nAnswer:"

pytestmark = pytest.mark.fuzz


@pytest.fixture(scope="module")
def untrained_model(tmp_path_factory) -> Path:
    tokenizer = train_bpe_tokenizer(DataSource("synthetic", people=20).texts(), vocab_size=512)
    return save_model(build_tiny_llama(tokenizer), tokenizer,
                      tmp_path_factory.mktemp("fuzz") / "model")


def test_no_request_gets_a_500_or_changes_the_servers_answers(untrained_model) -> None:
    args = ["--model", str(untrained_model), "--api-key", API_KEY, "--max-tokens-cap", "8",
            "--batch-wait-ms", "2", "--threads", "1"]
    with ServerProcess(args) as server:
        before = greedy_answer(server.url, API_KEY, PROMPT)
        rounds = []
        for seed in range(3):  # memory after each round: it must level off, not keep growing
            requests = make_requests(REQUESTS // 3, seed=seed, model=untrained_model.name,
                                     api_key=API_KEY)
            rounds.append(asyncio.run(fire(server.url, requests, CLIENTS)))
            rounds[-1].rss = resident_bytes(server.process.pid)
        after = greedy_answer(server.url, API_KEY, PROMPT)
        log = server.log_text
    for outcome in rounds:
        assert outcome.server_errors == [], outcome.server_errors[:5]
        assert outcome.transport_errors == [], outcome.transport_errors[:5]
        assert outcome.statuses[200] > 0 and outcome.statuses[400] > 0, outcome.statuses
    assert sum(o.sent for o in rounds) == 3 * (REQUESTS // 3)
    assert after == before
    growth = rounds[2].rss - rounds[0].rss
    assert growth < 64 * 2**20, f"resident memory grew {growth / 2**20:.0f} MiB between rounds"
    assert "Traceback" not in log, log[-3000:]
