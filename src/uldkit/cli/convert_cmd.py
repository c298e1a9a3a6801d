"""`uldkit convert gguf FILE --out DIR`: a GGUF file becomes a safetensors model directory."""

from __future__ import annotations

from pathlib import Path

import typer

from uldkit.cli.app import app

convert_app = typer.Typer(help="Convert other model formats into a uldkit model directory.",
                          no_args_is_help=True)
app.add_typer(convert_app, name="convert")


@convert_app.command("gguf")
def convert_gguf_command(
    file: Path = typer.Argument(..., help="A GGUF file (llama.cpp, Ollama)."),
    out: Path = typer.Option(..., "--out", help="The model directory to write."),
) -> None:
    """Dequantise a GGUF file into float32 safetensors with its tokenizer, chat template and
    end-of-turn ids. Any --model option also takes a .gguf file directly (converted once,
    cached by its sha256 under ~/.cache/uldkit/gguf)."""
    from uldkit.models.gguf import convert_gguf, gguf_metadata

    written = convert_gguf(file, out)
    info = gguf_metadata(file)
    typer.echo(f"converted {file} ({info.get('general.architecture', '?')}, "
               f"{', '.join(info['tensor_types'])}) into {written}")
