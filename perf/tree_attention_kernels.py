"""Which SDPA kernel the shared-prefix trie's ancestor mask runs on the CPU, and what it costs (issue 26).

``python perf/tree_attention_kernels.py``: one group trie as ``appo.train.shared_prefix`` builds it
(a prompt of P nodes, R rows of n response nodes, each row seeing the prompt and its own prefix), G groups,
H heads, head size D, fp32, 1 thread. Times forward and backward (median of 5) with the flash kernel and
the math kernel (boolean and additive masks), checks they agree, and times the same attention done as G*R
padded causal rows of P+n tokens (what a two-part attention would cost). Then (issue 26, what the update now
runs) the sparse root-path attention of ``appo.models.tree_attention`` over the same trie, all groups as one
sequence, interleaved with the dense flash kernel for 7 rounds: its outputs and gradients against the dense
ones and the per-round time ratio sparse / dense (forward + backward).
"""

from __future__ import annotations

import statistics
import time

import torch
import torch.nn.functional as F
from torch.nn.attention import SDPBackend, sdpa_kernel

G, H, D, P, R, N = 4, 4, 32, 40, 8, 53


def trie_mask() -> torch.Tensor:
    S = P + R * N
    allowed = torch.zeros(S, S, dtype=torch.bool)
    allowed[:P, :P] = torch.tril(torch.ones(P, P, dtype=torch.bool))
    for r in range(R):
        a, b = P + r * N, P + (r + 1) * N
        allowed[a:b, :P] = True
        allowed[a:b, a:b] = torch.tril(torch.ones(N, N, dtype=torch.bool))
    return allowed[None, None].expand(G, 1, S, S).contiguous()


def fwd_bwd(shape, **kw) -> tuple[float, float, torch.Tensor, torch.Tensor]:
    torch.manual_seed(1)
    q, k, v = (torch.randn(*shape, requires_grad=True) for _ in range(3))
    t = time.perf_counter()
    o = F.scaled_dot_product_attention(q, k, v, **kw)
    t1 = time.perf_counter()
    o.sum().backward()
    return t1 - t, time.perf_counter() - t1, o.detach(), q.grad


def main() -> int:
    torch.set_num_threads(1)
    mask = trie_mask()
    additive = torch.zeros(mask.shape).masked_fill_(~mask, torch.finfo(torch.float32).min)
    shape = (G, H, mask.shape[-1], D)
    outs = {}
    for name, backend, m in (("flash, bool mask", SDPBackend.FLASH_ATTENTION, mask),
                             ("math, bool mask", SDPBackend.MATH, mask),
                             ("math, additive mask", SDPBackend.MATH, additive)):
        with sdpa_kernel([backend]):
            runs = [fwd_bwd(shape, attn_mask=m) for _ in range(5)]
        outs[name] = runs[0][2:]
        print(f"trie {name}: forward {statistics.median(r[0] for r in runs) * 1e3:.1f} ms, "
              f"backward {statistics.median(r[1] for r in runs) * 1e3:.1f} ms")
    (o1, g1), (o2, g2) = outs["flash, bool mask"], outs["math, bool mask"]
    print(f"flash vs math: max |output diff| {(o1 - o2).abs().max():.2e}, max |grad diff| {(g1 - g2).abs().max():.2e}")
    runs = [fwd_bwd((G * R, H, P + N, D), is_causal=True) for _ in range(5)]
    print(f"padded causal rows: forward {statistics.median(r[0] for r in runs) * 1e3:.1f} ms, "
          f"backward {statistics.median(r[1] for r in runs) * 1e3:.1f} ms")
    with torch.profiler.profile() as prof:
        fwd_bwd(shape, attn_mask=mask)
    print("kernels:", sorted({e.key for e in prof.key_averages() if "scaled_dot_product" in e.key}))
    sparse_vs_dense(mask)
    return 0


def sparse_vs_dense(mask: torch.Tensor) -> None:
    """The sparse root-path attention (one sequence of every group's nodes) against dense flash over [G, S]."""
    from appo.models.tree_attention import layout_from_parents, tree_attention

    S = mask.shape[-1]
    parent = []
    for g in range(G):  # node g * S + i; the prompt is a chain, each row a chain hanging off the prompt's end
        for i in range(S):
            row_start = i >= P and (i - P) % N == 0
            parent.append(-1 if i == 0 else g * S + (P - 1 if row_start else i - 1))
    depth = [i if i < P else P + (i - P) % N for _ in range(G) for i in range(S)]
    layout = layout_from_parents(parent, depth)

    def run(sparse: bool):
        torch.manual_seed(1)
        q, k, v = (torch.randn(G, H, S, D, requires_grad=True) for _ in range(3))
        t = time.perf_counter()
        if sparse:
            one = [x.transpose(0, 1).reshape(H, G * S, D)[None] for x in (q, k, v)]  # [1, H, G * S, D]
            o = tree_attention(*one, layout, None).view(G, S, H, D)
        else:
            o = F.scaled_dot_product_attention(q, k, v, attn_mask=mask).transpose(1, 2)
        o.sum().backward()
        return time.perf_counter() - t, o.detach(), q.grad

    with sdpa_kernel([SDPBackend.FLASH_ATTENTION]):
        ratios = []
        for _ in range(7):
            ts, o_s, g_s = run(True)
            td, o_d, g_d = run(False)
            ratios.append(ts / td)
    print(f"sparse vs dense flash: max |output diff| {(o_s - o_d).abs().max():.2e}, max |grad diff| "
          f"{(g_s - g_d).abs().max():.2e}; time sparse / dense per round, forward + backward: median "
          f"{statistics.median(ratios):.2f} ({min(ratios):.2f}-{max(ratios):.2f}); "
          f"chunks x keys {tuple(layout.k_idx_MK.shape)}")


if __name__ == "__main__":
    raise SystemExit(main())
