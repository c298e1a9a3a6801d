"""`uldkit generate`: answer a question (or continue text) with any model uldkit loads."""

from __future__ import annotations

from typing import Any

import typer

from uldkit.cli import options
from uldkit.cli.app import app
from uldkit.errors import ConfigError


@app.command("generate")
def generate_command(
    model: str = typer.Option(..., "--model", help="A model directory: plain, ULD or offset."),
    prompt: list[str] = typer.Option(..., "--prompt", help="Question (or text with --raw); "
                                     "repeat to generate for several at once."),
    raw: bool = typer.Option(False, "--raw", help="Continue the text as is instead of "
                             "answering it as a question."),
    max_new_tokens: int = typer.Option(64, "--max-new-tokens", min=1),
    temperature: float = typer.Option(0.0, "--temperature", min=0.0,
                                      help="0 = greedy decoding; above 0 samples."),
    top_p: float = typer.Option(1.0, "--top-p", min=0.0, max=1.0),
    seed: int = typer.Option(None, "--seed", help="Sampling seed."),
    alpha: float = typer.Option(None, "--alpha", help="ULD: weight of the assistant."),
    tau: float = typer.Option(None, "--tau", help="ULD: relative-top filter (0 = off)."),
    filter: str = options.ULD_FILTER,
    device: str = options.DEVICE,
    allow_pickle: bool = options.ALLOW_PICKLE,
    trust_remote_code: bool = options.TRUST_REMOTE_CODE,
) -> None:
    """Generate one answer per prompt; each is printed on its own line."""
    from uldkit.cli.loading import load_language_model
    from uldkit.models.generation import GenerationSettings, generate_answers, generate_ids

    settings: dict[str, Any] = {k: v for k, v in (("alpha", alpha), ("tau", tau),
                                                  ("filter", filter)) if v is not None}
    lm = load_language_model(model, device=device, allow_pickle=allow_pickle,
                             trust_remote_code=trust_remote_code, **settings)
    generation = GenerationSettings(max_new_tokens=max_new_tokens, do_sample=temperature > 0,
                                    temperature=temperature or 1.0, top_p=top_p, seed=seed)
    if raw:
        prompts = [lm.tokenizer(text)["input_ids"] for text in prompt]
        if not all(prompts):
            raise ConfigError("--raw needs prompts that are not empty")
        outputs = [lm.tokenizer.decode(ids, skip_special_tokens=True)
                   for ids in generate_ids(lm, prompts, generation)]
    else:
        outputs = generate_answers(lm, prompt, generation)
    for text in outputs:
        typer.echo(text)
