"""A functional one-token decode step for Llama-style models over the model's own weights (plus fused copies).

Why: for small models a decode step is bound by per-operation dispatch, not arithmetic. The Hugging Face
module stack runs about 280 tensor operations and 60 module calls per step for a 4-layer Llama; this step
runs about 20 per layer plus a handful, with the same math:

    h <- embed(x);  per layer:  a = rmsnorm(h);  q, k, v = a Wq^T (+bq), a Wk^T, a Wv^T
        [Qwen3: q, k <- rmsnorm_head(q), rmsnorm_head(k)];  q, k <- rope(q), rope(k)
        append k, v to the batch cache;  o = softmax(q K^T / sqrt(d) + mask) V
        h <- h + o Wo^T;  a = rmsnorm(h);  h <- h + (silu(a Wg^T) * a Wu^T) Wd^T
    logits = rmsnorm(h) W_lm^T

with ``rope(x) = x cos + rotate_half(x) sin`` computed as ``x cos + flip_halves(x) sin_signed`` from a
cos/sin table built once per batch (same values as the model's rotary module, cast to the model dtype).
Norms use ``torch.nn.functional.rms_norm`` in float32 models and the model's own float32-upcast formula
otherwise, so results match the module stack to rounding.

Fused projections (small models): ``[Wq; Wk; Wv]`` and ``[Wg; Wu]`` are concatenated into one weight
each, so a layer runs 4 matrix products instead of 7 and RoPE is applied to q and k in one pass (they sit
side by side in the fused output): about 20 dispatches per layer instead of 30. Measured on 2 loaded
cores, 1 thread, step alone (min over 20 interleaved runs): hidden 128 / 4 layers 1.11x at batch 1 and
1.16x at batch 8, 0.85x at batch 32 (compute-bound); SmolLM2-135M (hidden 576) 0.97x at batch 1 and 0.84x
at batch 8 (matmul-bound: fusing only adds copies). So ``build`` fuses by default only for
``hidden_size <= FUSE_MAX_HIDDEN``. These are the only weight copies (``fused_bytes``: about two thirds of
the decoder layers' weights, none of the embeddings or the LM head); the engine keeps a decoder only while
the weights' fingerprint is unchanged and rebuilds it
(one ``torch.cat`` per layer) after any in-place update, so the copies are never stale. The other weights
are referenced, never copied. Supported: ``model_type`` llama, mistral, qwen2, qwen3 with SiLU MLPs and
full attention; anything else (or any surprise in the module layout) returns None from ``build`` and the
engine uses the model's forward instead. Prefill always uses the model's forward.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F

SUPPORTED_TYPES = ("llama", "mistral", "qwen2", "qwen3")

FUSE_MAX_HIDDEN = 512
"""Fuse q/k/v and gate/up weights by default only up to this hidden size (dispatch-bound layers)."""


@dataclass(frozen=True)
class _Layer:
    """References to one decoder layer's parameters (no copies)."""

    ln1: torch.Tensor
    """Input RMSNorm weight."""
    eps1: float
    """Its epsilon."""
    wo_t: torch.Tensor
    """o projection weight, transposed view (for ``addmm``; shares storage)."""
    bo: torch.Tensor | None
    """o projection bias or None."""
    q_norm: tuple[torch.Tensor, float] | None
    """Per-head RMSNorm of q (Qwen3), or None; ``k_norm`` likewise."""
    k_norm: tuple[torch.Tensor, float] | None
    ln2: torch.Tensor
    """Post-attention RMSNorm weight."""
    eps2: float
    wd_t: torch.Tensor
    """Down projection weight, transposed view."""
    bd: torch.Tensor | None
    """Down projection bias or None."""
    scaling: float
    """Attention softmax scale."""
    qkv: tuple[tuple[torch.Tensor, torch.Tensor | None], ...]
    """(weight, bias) of the q/k/v projections: three references, or one fused copy ``[Wq; Wk; Wv]``."""
    gu: tuple[tuple[torch.Tensor, torch.Tensor | None], ...]
    """(weight, bias) of the gate/up projections: two references, or one fused copy ``[Wg; Wu]``."""


class _Unsupported(Exception):
    pass


def _bias(linear) -> torch.Tensor | None:
    return linear.bias if linear.bias is not None else None


def _fuse(linears) -> tuple[torch.Tensor, torch.Tensor | None]:
    """``(cat of the weights, cat of the biases or None)`` along the output dim, detached copies (a missing
    bias among present ones is zeros)."""
    w = torch.cat([lin.weight.detach() for lin in linears], 0)
    if all(lin.bias is None for lin in linears):
        return w, None
    return w, torch.cat([lin.bias.detach() if lin.bias is not None else
                         lin.weight.new_zeros(lin.weight.shape[0]) for lin in linears], 0)


def _linear(module) -> torch.nn.Linear:
    # exactly nn.Linear: adapters (LoRA), quantised layers and the like go through the model's forward
    if type(module) is not torch.nn.Linear:
        raise _Unsupported(type(module).__name__)
    return module


def _norm(module) -> tuple[torch.Tensor, float]:
    if not type(module).__name__.endswith("RMSNorm") or type(module).__name__.startswith("Gemma"):
        raise _Unsupported(type(module).__name__)
    eps = getattr(module, "variance_epsilon", None)
    if eps is None:
        eps = module.eps
    return module.weight, float(eps)


class FastDecoder:
    """``step(ids_B, pos_B, cache) -> logits_BV`` for one token per row; see the module docstring."""

    def __init__(self, model, layers: list[_Layer], n_heads: int, n_kv: int, head_dim: int):
        self.model = model
        base = model.model
        if type(base.embed_tokens) is not torch.nn.Embedding:
            raise _Unsupported(type(base.embed_tokens).__name__)
        self.embed = base.embed_tokens.weight
        self.final_norm = _norm(base.norm)
        self.lm_head = _linear(model.lm_head).weight
        self.lm_bias = _bias(model.lm_head)
        self.rotary = base.rotary_emb
        self.layers = layers
        self.n_heads, self.n_kv, self.head_dim = n_heads, n_kv, head_dim
        self.gqa = n_heads != n_kv
        self.dtype = self.embed.dtype
        self.exact_norm = self.dtype == torch.float32
        self.cos_LD = self.sin_LD = None

    @staticmethod
    def build(model, fuse: bool | None = None) -> FastDecoder | None:
        """A decoder over ``model``'s current parameters, or None when the architecture is not supported.

        ``fuse``: concatenate q/k/v and gate/up weights (copies); None fuses when ``hidden_size <=
        FUSE_MAX_HIDDEN`` (see the module docstring for the measurement behind it)."""
        config = model.config
        if fuse is None:
            fuse = config.hidden_size <= FUSE_MAX_HIDDEN
        if getattr(config, "model_type", None) not in SUPPORTED_TYPES or getattr(config, "hidden_act", None) != "silu":
            return None
        base = getattr(model, "model", None)
        if base is None or not hasattr(model, "lm_head") or not hasattr(base, "rotary_emb"):
            return None
        if getattr(base.rotary_emb, "rope_type", "default") in ("dynamic", "longrope"):
            return None
        if getattr(config, "final_logit_softcapping", None) or getattr(config, "logit_scale", None):
            return None
        n_heads = config.num_attention_heads
        n_kv = getattr(config, "num_key_value_heads", None) or n_heads
        head_dim = getattr(config, "head_dim", None) or config.hidden_size // n_heads
        layers = []
        try:
            for layer in base.layers:
                a, m = layer.self_attn, layer.mlp
                for lin in (a.q_proj, a.k_proj, a.v_proj, a.o_proj, m.gate_proj, m.up_proj, m.down_proj):
                    _linear(lin)
                qn = _norm(a.q_norm) if hasattr(a, "q_norm") else None
                kn = _norm(a.k_norm) if hasattr(a, "k_norm") else None
                (ln1, e1), (ln2, e2) = _norm(layer.input_layernorm), _norm(layer.post_attention_layernorm)
                qkv, gu = (a.q_proj, a.k_proj, a.v_proj), (m.gate_proj, m.up_proj)
                layers.append(_Layer(
                    ln1=ln1, eps1=e1, wo_t=a.o_proj.weight.t(), bo=_bias(a.o_proj), q_norm=qn, k_norm=kn, ln2=ln2,
                    eps2=e2, wd_t=m.down_proj.weight.t(), bd=_bias(m.down_proj),
                    scaling=float(getattr(a, "scaling", head_dim**-0.5)),
                    qkv=(_fuse(qkv),) if fuse else tuple((x.weight, _bias(x)) for x in qkv),
                    gu=(_fuse(gu),) if fuse else tuple((x.weight, _bias(x)) for x in gu)))
            return FastDecoder(model, layers, n_heads, n_kv, head_dim)
        except (AttributeError, _Unsupported):
            return None

    def prepare(self, max_positions: int, device: torch.device) -> None:
        """Build the cos/sin table for positions ``[0, max_positions)`` with the model's rotary module."""
        if self.cos_LD is not None and self.cos_LD.shape[0] >= max_positions:
            return
        n = max(max_positions, 2 * (0 if self.cos_LD is None else self.cos_LD.shape[0]))
        pos = torch.arange(n, device=device)[None]
        probe = torch.empty(1, dtype=self.dtype, device=device)
        cos, sin = self.rotary(probe, pos)
        half = self.head_dim // 2
        self.cos_LD = cos[0].contiguous()
        self.sin_LD = torch.cat((-sin[0, :, :half], sin[0, :, half:]), -1).contiguous()

    def _rms(self, x: torch.Tensor, w: torch.Tensor, eps: float) -> torch.Tensor:
        if self.exact_norm:
            return F.rms_norm(x, (x.shape[-1],), w, eps)
        x32 = x.float()
        return w * (x32 * torch.rsqrt(x32.pow(2).mean(-1, keepdim=True) + eps)).to(x.dtype)

    @property
    def fused_bytes(self) -> int:
        """Bytes of the fused weight copies (the decoder's only copies)."""
        return sum(t.numel() * t.element_size() for L in self.layers for group in (L.qkv, L.gu) if len(group) == 1
                   for t in group[0] if t is not None)

    def _rope(self, x: torch.Tensor, cos: torch.Tensor, sin: torch.Tensor, out: torch.Tensor | None = None):
        D = self.head_dim
        flipped = x.unflatten(-1, (2, D // 2)).flip(-2).flatten(-2)
        return torch.addcmul(x * cos, flipped, sin, out=out) if out is not None else torch.addcmul(x * cos, flipped,
                                                                                                   sin)

    def step(self, ids_B: torch.Tensor, pos_B: torch.Tensor, cache, mask: torch.Tensor) -> torch.Tensor:
        """Run one token per row at positions ``pos_B``, appending its KV at column ``cache.length``."""
        B, Hq, Hk, D = ids_B.shape[0], self.n_heads, self.n_kv, self.head_dim
        col = cache.length
        h = F.embedding(ids_B, self.embed)  # [B, hidden]
        cos = self.cos_LD.index_select(0, pos_B).view(B, 1, 1, D)
        sin = self.sin_LD.index_select(0, pos_B).view(B, 1, 1, D)
        nq, nk = Hq * D, Hk * D
        for L, buf in zip(self.layers, cache.layers):
            a = self._rms(h, L.ln1, L.eps1)
            if len(L.qkv) == 1:  # fused: one product, views into it
                qkv = F.linear(a, *L.qkv[0])  # [B, (Hq + 2 Hk) D]
                q, k, v = qkv[:, :nq], qkv[:, nq : nq + nk], qkv[:, nq + nk :]
            else:
                q, k, v = (F.linear(a, w, b) for w, b in L.qkv)
            q, k, v = q.view(B, Hq, 1, D), k.view(B, Hk, 1, D), v.view(B, Hk, 1, D)
            if L.q_norm is not None:  # Qwen3: per-head norms before RoPE
                q, k = self._rms(q, *L.q_norm), self._rms(k, *L.k_norm)
            if len(L.qkv) == 1 and L.q_norm is None:  # q and k side by side: one RoPE pass
                qk = self._rope(qkv[:, : nq + nk].view(B, Hq + Hk, 1, D), cos, sin)
                q = qk[:, :Hq]
                buf.k_buf[:, :, col : col + 1] = qk[:, Hq:]
            else:
                q = self._rope(q, cos, sin)
                self._rope(k, cos, sin, out=buf.k_buf[:, :, col : col + 1])
            buf.v_buf[:, :, col : col + 1] = v
            keys, values = buf.k_buf[:, :, : col + 1], buf.v_buf[:, :, : col + 1]
            o = F.scaled_dot_product_attention(q, keys, values, attn_mask=mask, scale=L.scaling, enable_gqa=self.gqa)
            o = o.view(B, Hq * D)
            h = torch.addmm(h, o, L.wo_t) if L.bo is None else torch.addmm(h + L.bo, o, L.wo_t)
            a = self._rms(h, L.ln2, L.eps2)
            if len(L.gu) == 1:
                gu = F.linear(a, *L.gu[0])  # [B, 2 I]
                half = gu.shape[1] // 2
                gu = F.silu(gu[:, :half]) * gu[:, half:]
            else:
                (wg, bg), (wu, bu) = L.gu
                gu = F.silu(F.linear(a, wg, bg)) * F.linear(a, wu, bu)
            h = torch.addmm(h, gu, L.wd_t) if L.bd is None else torch.addmm(h + L.bd, gu, L.wd_t)
        h = self._rms(h, *self.final_norm)
        return F.linear(h, self.lm_head, self.lm_bias)
