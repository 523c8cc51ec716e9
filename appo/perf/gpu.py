"""What the GPU run of ``scripts/gpu_check.py`` needs besides the checks: a ~125M Llama built from a config,
the device's measured ceilings, and FLOP / byte estimates that turn times into fractions of those ceilings.

The speed model has SmolLM2-135M's shape (hidden 576, 30 layers, 9 query heads, 3 KV heads, MLP 1536,
tied embeddings) with random weights and a byte-level BPE tokenizer trained in seconds on the Python
standard library's source (``stdlib_corpus``): a 32k vocabulary where SmolLM2 has 49k, so the LM head is
about two thirds of SmolLM2's. No hub, no weights: the folder loads like any model path.

Estimates (all counted once per token, biases and norms ignored):

- forward FLOP per token ``2 P + 4 L d c`` (``P`` parameters in matmuls, the tied embedding counted once as
  the LM head; attention scores and values over ``c`` context tokens: ``2 * 2 * d * c`` per layer, query
  width ``d``); a training token costs 3x a forward token (forward + backward);
- decode bytes per step: every weight once (``P * dtype bytes``) plus the KV of every live row
  (``rows * c * kv_bytes_per_token``); reads of activations and logits are left out (small at these sizes).
"""

from __future__ import annotations

import sysconfig
import time
from dataclasses import dataclass
from pathlib import Path

import torch

SMOLLM2_SHAPE = {"hidden_size": 576, "num_hidden_layers": 30, "num_attention_heads": 9, "num_key_value_heads": 3,
                 "intermediate_size": 1536}
"""SmolLM2-135M's decoder shape (its config.json), used for the speed model."""

H200_SPEC = {"bf16_dense_tflops": 989.0, "hbm_tb_s": 4.8}
"""The vendor's H200 SXM datasheet figures (dense bf16, HBM3e bandwidth)."""


def stdlib_corpus(max_chars: int = 6_000_000) -> list[str]:
    """Source files of the running Python's standard library (sorted by path, tests left out), up to
    ``max_chars`` characters: text any machine with Python has, to train a realistic-size BPE on."""
    root = Path(sysconfig.get_paths()["stdlib"])
    texts, n = [], 0
    for p in sorted(root.rglob("*.py")):
        if "test" in p.parts or "tests" in p.parts or "site-packages" in p.parts:
            continue
        text = p.read_text(errors="ignore")
        texts.append(text)
        n += len(text)
        if n >= max_chars:
            break
    return texts


def build_speed_model(out_dir: str | Path, *, vocab_size: int = 32768, shape: dict | None = None,
                      corpus_chars: int = 6_000_000, seed: int = 0) -> Path:
    """Write a random-init Llama of ``shape`` (default SmolLM2-135M's) with a BPE tokenizer of about
    ``vocab_size`` tokens (trained on :func:`stdlib_corpus`) to ``out_dir``; returns the folder."""
    from transformers import LlamaConfig, LlamaForCausalLM

    from appo.models.tiny import save_pretrained, train_tokenizer

    out = Path(out_dir)
    if (out / "config.json").is_file():
        return out
    shape = dict(SMOLLM2_SHAPE if shape is None else shape)
    tok = train_tokenizer(stdlib_corpus(corpus_chars), vocab_size=vocab_size)
    config = LlamaConfig(vocab_size=len(tok), max_position_embeddings=2048, tie_word_embeddings=True,
                         bos_token_id=None, eos_token_id=tok.eos_token_id, pad_token_id=tok.pad_token_id,
                         rope_theta=100000.0, **shape)
    with torch.random.fork_rng():
        torch.manual_seed(seed)
        model = LlamaForCausalLM(config)
    model.generation_config.eos_token_id = tok.eos_token_id
    model.generation_config.pad_token_id = tok.pad_token_id
    return save_pretrained(model, tok, out)


@dataclass(frozen=True)
class ModelShape:
    """The numbers the estimates need, read off a model."""

    params: int
    """Parameters (a tied embedding counted once)."""
    layers: int
    """Decoder layers."""
    hidden: int
    """Query width (heads x head dim) = hidden size for Llama."""
    kv_bytes_per_token: int
    """Bytes of K and V of one token, all layers, in the model's dtype."""
    dtype_bytes: int
    """Bytes per parameter."""

    @classmethod
    def of(cls, model) -> ModelShape:
        """Read ``model``'s shape (Llama-style config)."""
        c = model.config
        params = sum(p.numel() for p in model.parameters())  # tied weights appear once in parameters()
        dtype = next(model.parameters()).dtype
        nbytes = torch.empty((), dtype=dtype).element_size()
        kv_heads = getattr(c, "num_key_value_heads", None) or c.num_attention_heads
        head_dim = getattr(c, "head_dim", None) or c.hidden_size // c.num_attention_heads
        return cls(params=params, layers=c.num_hidden_layers, hidden=c.num_attention_heads * head_dim,
                   kv_bytes_per_token=2 * c.num_hidden_layers * kv_heads * head_dim * nbytes, dtype_bytes=nbytes)

    def forward_flops(self, tokens: float, context: float) -> float:
        """FLOP of ``tokens`` forward tokens at mean attention context ``context``: ``(2 P + 4 L d c)`` each."""
        return tokens * (2.0 * self.params + 4.0 * self.layers * self.hidden * context)

    def decode_flops(self, rows: int, prompt_len: float, new_tokens: int) -> float:
        """FLOP of decoding ``new_tokens`` for ``rows`` rows after a ``prompt_len`` prefix (mean context
        ``prompt_len + new_tokens / 2``)."""
        return self.forward_flops(rows * new_tokens, prompt_len + new_tokens / 2)

    def decode_bytes(self, rows: int, prompt_len: float, new_tokens: int) -> float:
        """Bytes read by ``new_tokens`` decode steps: all weights per step plus each row's KV so far."""
        weights = new_tokens * self.params * self.dtype_bytes
        kv = rows * self.kv_bytes_per_token * (new_tokens * prompt_len + new_tokens * (new_tokens - 1) / 2)
        return weights + kv

    def train_flops(self, tokens: float, context: float) -> float:
        """FLOP of a forward + backward over ``tokens`` tokens: 3x the forward."""
        return 3.0 * self.forward_flops(tokens, context)


def measure_ceilings(device: str | torch.device, matmul_n: int = 8192, copy_bytes: int = 2 << 30,
                     repeats: int = 10) -> dict:
    """The device's bf16 matmul rate (TFLOP/s, random inputs, mean of ``repeats`` after 3 warm-ups) and
    device-to-device copy bandwidth (GB/s counting bytes read + written), timed with CUDA events (host
    clock on CPU). The ceilings the fractions of :class:`ModelShape` estimates are taken against."""
    dev = torch.device(device)
    cuda = dev.type == "cuda"
    dtype = torch.bfloat16 if cuda else torch.float32
    a = torch.randn(matmul_n, matmul_n, device=dev, dtype=dtype)
    b = torch.randn(matmul_n, matmul_n, device=dev, dtype=dtype)
    src = torch.randn(copy_bytes // 4, device=dev)
    dst = torch.empty_like(src)

    def timed(fn) -> float:
        for _ in range(3):
            fn()
        if cuda:
            start, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
            torch.cuda.synchronize(dev)
            start.record()
            for _ in range(repeats):
                fn()
            end.record()
            torch.cuda.synchronize(dev)
            return start.elapsed_time(end) / 1e3 / repeats
        t = time.perf_counter()
        for _ in range(repeats):
            fn()
        return (time.perf_counter() - t) / repeats

    mm = timed(lambda: a @ b)
    cp = timed(lambda: dst.copy_(src))
    return {"matmul_tflops": 2 * matmul_n**3 / mm / 1e12, "matmul_n": matmul_n, "matmul_dtype": str(dtype),
            "copy_gb_s": 2 * src.numel() * 4 / cp / 1e9, "copy_bytes": src.numel() * 4}


def gpu_peak_mb(device: str | torch.device) -> float | None:
    """Peak CUDA memory allocated since the last reset (MiB), None off CUDA."""
    dev = torch.device(device)
    if dev.type != "cuda":
        return None
    return torch.cuda.max_memory_allocated(dev) / 2**20


def reset_gpu_peak(device: str | torch.device) -> None:
    """Reset the CUDA peak-memory counter (nothing off CUDA)."""
    dev = torch.device(device)
    if dev.type == "cuda":
        torch.cuda.synchronize(dev)
        torch.cuda.reset_peak_memory_stats(dev)


def sync(device: str | torch.device) -> None:
    """Wait for the device's queued work (nothing off CUDA)."""
    dev = torch.device(device)
    if dev.type == "cuda":
        torch.cuda.synchronize(dev)
