"""The vLLM worker extension that loads the trainer's weights: vLLM's documented route for RL weight updates.

vLLM (V1, >= 0.8) mixes a class named at construction (``LLM(..., worker_extension_cls="module.Class")``)
into every worker; ``LLM.collective_rpc("method", args=(...))`` then calls that method by name on each
worker, in the worker's process, with arguments that vLLM serializes itself (msgpack: strings, numbers,
lists). Nothing is pickled, so ``VLLM_ALLOW_INSECURE_SERIALIZATION`` stays off.

The weights travel as one safetensors file (on ``/dev/shm`` where it exists: a copy in shared memory, not on
disk) whose path is the RPC's only argument; the worker memory-maps it and hands the tensors to the model's
``reload_weights`` (the model's ``load_weights`` under vLLM's layer-wise reload, which maps checkpoint
names onto vLLM's fused layers, ``qkv_proj`` / ``gate_up_proj``, shards them for tensor parallelism and
re-runs the kernels' weight processing). This module is imported inside vLLM's worker processes: it must not
import vLLM at module level (the class is mixed into vLLM's worker, whatever its type) nor anything heavy.
"""

from __future__ import annotations

EXTENSION = "appo.engine.vllm_worker.WeightSyncExtension"
"""The qualified name :class:`~appo.engine.vllm.VLLMEngine` passes as ``worker_extension_cls``."""


class WeightSyncExtension:
    """Methods vLLM adds to each of its workers (``self`` is the worker: ``self.model_runner.model`` is the
    vLLM model). Called through ``LLM.collective_rpc(name, args=...)``; each returns a plain value."""

    def appo_load_weights_file(self, path: str) -> int:
        """Load every tensor of the safetensors file ``path`` (checkpoint names) into this worker's model;
        returns how many tensors were read.

        Through the worker's own ``reload_weights(weights_iterator=..., is_checkpoint_format=True)`` (vLLM >=
        0.2x, an in-place layer-wise reload): backends that repack weights after loading (the CPU build's
        linear layers, quantized kernels) cannot take a plain ``model.load_weights`` a second time, which
        fails with ``Attempted to load weight ... into parameter (torch.Size([0]))``. Older workers without
        ``reload_weights`` get ``model.load_weights``."""
        from safetensors.torch import load_file

        tensors = load_file(path, device="cpu")
        reload = getattr(self, "reload_weights", None)
        if reload is not None:
            reload(weights_iterator=iter(list(tensors.items())), is_checkpoint_format=True)
        else:
            self.model_runner.model.load_weights(weights=list(tensors.items()))
        self._appo_refresh_tied_head()
        return len(tensors)

    def _appo_refresh_tied_head(self) -> None:
        """Re-run the LM head's weight processing when it is tied to the input embedding.

        vLLM's CPU build packs the LM head's weight for its GEMM once, after loading
        (``UnquantizedEmbeddingMethod.process_weights_after_loading``); a tied head receives no tensor of its own
        in a reload, so it kept computing logits with the old embedding (measured: |delta log-prob| ~ 4 after
        changing the embedding, 1e-6 with this refresh; tests/vllm_real). Uses vLLM internals (``lm_head``,
        ``quant_method``): a no-op where they are absent."""
        model = self.model_runner.model
        head = getattr(model, "lm_head", None)
        config = getattr(model, "config", None)
        method = getattr(head, "quant_method", None)
        if head is None or method is None or not getattr(config, "tie_word_embeddings", False):
            return
        method.process_weights_after_loading(head)

    def appo_weights_digest(self, names: list[str]) -> list[float]:
        """``sum(|w|)`` in float64 of the vLLM parameters called ``names`` (vLLM's own names, e.g. fused
        ``qkv_proj``, or attribute paths such as a tied ``lm_head.weight``); for tests that a push changed what
        the worker holds."""
        model = self.model_runner.model
        out = []
        for name in names:  # by attribute path: a tied lm_head has no name of its own in named_parameters
            module_name, _, attr = name.rpartition(".")
            t = getattr(model.get_submodule(module_name) if module_name else model, attr)
            out.append(float(t.detach().double().abs().sum()))
        return out
