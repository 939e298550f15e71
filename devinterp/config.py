"""Every setting of the tool, as pydantic models: the one place where defaults live.

A run is described by one YAML file that validates into :class:`RunConfig`. Each box of the
pipeline reads only its own section (``recipe``, ``sweep``, ``detect``, ``report``). Unknown keys
and bad values are refused with a :class:`ConfigError` that names the file and the field, e.g.::

    configs/quickstart.yaml: recipe.train.lr: Input should be greater than 0 (got -1)

The CLI and the Python API read their defaults from here; nothing else restates them.
"""

from __future__ import annotations

import hashlib
import json
from pathlib import Path
from typing import Annotated, Any, ClassVar, Literal, Union

import yaml
from pydantic import (
    BaseModel,
    ConfigDict,
    Discriminator,
    Field,
    Tag,
    ValidationError,
    field_validator,
    model_validator,
)


class ConfigError(ValueError):
    """A configuration that cannot be used; the message names the file and the field."""


class ConfigErrorAt(ValueError):
    """Raised inside a validator to blame a field below the validated model: ``loc`` is its path
    (e.g. ``("sweep", "metrics", 2)``), so the message names that field, not the model."""

    def __init__(self, loc: tuple, message: str):
        super().__init__(message)
        self.loc, self.message = tuple(loc), message


# Why a metric group does not apply to a recipe (the config error says it).
_GROUP_NEEDS = {
    "icl_score": "it needs next-token losses of a token model",
    "heads": "it reads the attention patterns of the attention-only token model",
    "head_llc": "it samples the heads of the attention-only token model",
    "position_loss": "it is the per-position loss of icl-regression",
}


class StrictModel(BaseModel):
    """Base for every settings model: unknown keys are errors, values are checked on assignment."""

    model_config = ConfigDict(extra="forbid", validate_assignment=True)


# --------------------------------------------------------------------------------------------
# Recipe: what to train
# --------------------------------------------------------------------------------------------


class ModelConfig(StrictModel):
    """A 2-layer attention-only transformer (TransformerLens ``TransformerBridge``)."""

    n_layers: int = Field(2, ge=1, description="number of attention layers")
    n_heads: int = Field(4, ge=1, description="attention heads per layer")
    d_model: int = Field(64, ge=1, description="residual stream width")
    d_head: int = Field(16, ge=1, description="width of one head")
    n_ctx: int = Field(64, ge=4, description="context length in tokens")
    d_vocab: int = Field(64, ge=4, description="vocabulary size")
    # TransformerLens's name and values; left out of dumps at its default, so that runs and checkpoints
    # made before the option keep their hashes and metadata
    positional_embedding_type: Literal["standard", "rotary", "shortformer"] = Field(
        "standard", exclude_if=lambda value: value == "standard",
        description="standard: learned absolute positions added to the residual stream; shortformer (the "
        "paper's, TransformerLens 2's): the same learned positions added, after LayerNorm, to the inputs of "
        "the queries and keys only, so the residual stream carries tokens alone; rotary: RoPE (Su et al. "
        "2021) on queries and keys only, so 'attend to the previous token' is the same map at every position")


class InductionDataConfig(StrictModel):
    """Random tokens with copied spans (REFERENCE.md §3, 'synthetic induction task')."""

    n_spans: int = Field(3, ge=1, description="copied spans per sequence (one span gives no induction)")
    span_min: int = Field(8, ge=2, description="shortest copied span, tokens")
    span_max: int = Field(16, ge=2, description="longest copied span, tokens")

    @model_validator(mode="after")
    def _span_order(self) -> "InductionDataConfig":
        if self.span_min > self.span_max:
            raise ValueError(f"span_min ({self.span_min}) must not exceed span_max ({self.span_max})")
        return self


class ScheduleConfig(StrictModel):
    """Checkpoint steps: log-spaced up to ``switch_step``, then linear up to the last step."""

    n_log: int = Field(12, ge=0, description="log-spaced checkpoints in [1, switch_step)")
    switch_step: int = Field(400, ge=1, description="step where spacing turns linear")
    linear_every: int = Field(75, ge=1, description="spacing of the linear part, steps")


SAVE_TRAIN_STATE = ("save the optimizer and data-stream state beside each checkpoint (<step>.train_state.pt), "
                    "so `devinterp refine` can resume training from it")


class TrainConfig(StrictModel):
    steps: int = Field(3000, ge=1, description="optimizer steps")
    batch_size: int = Field(32, ge=1, description="sequences per step")
    lr: float = Field(2e-3, gt=0, description="AdamW learning rate")
    weight_decay: float = Field(0.01, ge=0, description="AdamW weight decay")
    seed: int = Field(0, description="seed of the weights and of the training data stream")
    schedule: ScheduleConfig = Field(default_factory=ScheduleConfig)
    save_train_state: bool = Field(True, description=SAVE_TRAIN_STATE)


# Metric groups of the token-model recipes (attention-only family): every group.
TOKEN_METRIC_GROUPS = ("loss", "icl_score", "heads", "llc", "head_llc", "token_loss")


class RecipeConfig(StrictModel):
    """Recipe 'induction' (the default): the attention-only transformer on copied spans of random tokens."""

    metric_groups: ClassVar[tuple[str, ...]] = TOKEN_METRIC_GROUPS

    name: Literal["induction"] = Field("induction", description="which recipe: induction, icl-regression or "
                                       "language; each has its own model/data/train keys (listed below by name)")
    model: ModelConfig = Field(default_factory=ModelConfig)
    data: InductionDataConfig = Field(default_factory=InductionDataConfig)
    train: TrainConfig = Field(default_factory=TrainConfig)

    @model_validator(mode="after")
    def _spans_fit(self) -> "RecipeConfig":
        if 2 * self.data.span_max > self.model.n_ctx:
            raise ValueError(
                f"data.span_max ({self.data.span_max}) is too long for model.n_ctx ({self.model.n_ctx}): "
                "a span and its copy must both fit, so 2*span_max <= n_ctx"
            )
        return self


class ICLModelConfig(StrictModel):
    """The transformer of in-context linear regression (REFERENCE.md §2.2; devinterp/models/icl_transformer.py):
    vector tokens [0, x] / [y, 0...0] embedded linearly, pre-LayerNorm blocks with attention and a ReLU MLP."""

    task_size: int = Field(4, ge=1, description="D: dimension of the inputs x and task vectors t (tokens are D+1 wide)")
    max_examples: int = Field(8, ge=1, description="K: (x, y) pairs per sequence; the context is 2K tokens")
    n_layers: int = Field(2, ge=1, description="transformer blocks (attention + MLP)")
    n_heads: int = Field(4, ge=1, description="attention heads per block (d_head = d_model / n_heads)")
    d_model: int = Field(64, ge=1, description="residual stream width")
    d_mlp: int = Field(64, ge=1, description="hidden width of each MLP")
    layer_norm: bool = Field(True, description="pre-LayerNorm before attention, MLP and unembedding")

    @model_validator(mode="after")
    def _heads_divide(self) -> "ICLModelConfig":
        if self.d_model % self.n_heads:
            raise ValueError(f"n_heads ({self.n_heads}) must divide d_model ({self.d_model})")
        return self


class ICLDataConfig(StrictModel):
    """Sequences of in-context linear regression: per sequence a task t ~ N(0, I_D), inputs x_k ~ N(0, I_D),
    targets y_k = t.x_k + N(0, noise_variance), k = 1..K (D and K from the model config); a fresh task
    for every sequence (infinite task diversity)."""

    noise_variance: float = Field(0.125, ge=0, description="sigma^2, variance of the noise on y")


class ICLTrainConfig(StrictModel):
    """Training of the regression recipe: AdamW on the MSE of every y-prediction; the paper uses Adam
    (weight decay 0) and a one-cycle learning rate (linear up to ``lr`` at ``pct_start``, then down)."""

    steps: int = Field(20000, ge=1, description="optimizer steps (the paper: 500,000 at batch 256)")
    batch_size: int = Field(64, ge=1, description="sequences per step (a fresh batch every step)")
    lr: float = Field(3e-3, gt=0, description="peak learning rate")
    lr_schedule: Literal["onecycle", "constant"] = Field(
        "onecycle", description="onecycle: linear from lr/div_factor up to lr at pct_start*steps, then linearly "
                                "down to lr/div_factor at the last step (the paper's OneCycleLR); constant: lr")
    pct_start: float = Field(0.5, gt=0, lt=1, description="onecycle: share of the steps spent warming up")
    div_factor: float = Field(250.0, ge=1, description="onecycle: lr / div_factor at the first and last step")
    weight_decay: float = Field(0.0, ge=0, description="AdamW weight decay (0 = the paper's Adam)")
    seed: int = Field(0, description="seed of the weights and of the training data stream")
    schedule: ScheduleConfig = Field(
        default_factory=lambda: ScheduleConfig(n_log=36, switch_step=20000, linear_every=20000),
        description="checkpoint steps (log-spaced up to switch_step, since the stages are log-paced)")
    save_train_state: bool = Field(True, description=SAVE_TRAIN_STATE)


class ICLRegressionRecipeConfig(StrictModel):
    """Recipe 'icl-regression': a 2-layer transformer (with MLPs and LayerNorm) learns in-context linear
    regression (Hoogland et al. 2024, REFERENCE.md §2.2). The defaults are the paper's model and task
    (D = 4, K = 8, sigma^2 = 0.125) with a CPU-sized training run (configs/icl-regression.yaml)."""

    metric_groups: ClassVar[tuple[str, ...]] = ("loss", "llc", "token_loss", "position_loss")
    default_metrics: ClassVar[tuple[str, ...]] = ("loss", "llc", "position_loss")

    name: Literal["icl-regression"] = Field("icl-regression", description="this recipe")
    model: ICLModelConfig = Field(default_factory=ICLModelConfig)
    data: ICLDataConfig = Field(default_factory=ICLDataConfig)
    train: ICLTrainConfig = Field(default_factory=ICLTrainConfig)


class LanguageDataConfig(StrictModel):
    """Offline synthetic text for the paper-size language model (devinterp/recipes/language.py): a Zipfian
    unigram distribution, a sparse random bigram and trigram structure on top, and spans copied from
    earlier in the sequence, so bigrams, n-grams and induction all lower the loss."""

    zipf_exponent: float = Field(1.0, gt=0, description="unigram probabilities ~ 1 / rank^zipf_exponent")
    bigram_prob: float = Field(0.5, ge=0, le=1, description="chance a token (with no trigram rule firing) follows "
                                                                "the bigram table of the previous token; else a unigram draw")
    bigram_successors: int = Field(8, ge=1, description="successors per token in the bigram table (Zipf-weighted)")
    trigram_prob: float = Field(0.5, ge=0, le=1, description="chance the trigram rule of the previous two tokens "
                                                                 "fires, where that pair has one (checked first)")
    trigram_contexts: int = Field(2000, ge=0, description="token pairs (a, b) that have a trigram rule "
                                                          "(drawn among frequent pairs)")
    copy_prob: float = Field(0.5, ge=0, le=1, description="chance per sequence of each copied span")
    n_copies: int = Field(4, ge=0, description="copied spans per sequence (each kept with copy_prob)")
    span_min: int = Field(16, ge=2, description="shortest copied span, tokens")
    span_max: int = Field(64, ge=2, description="longest copied span, tokens")
    table_seed: int = Field(1234, description="seed of the language itself (unigram ranks, bigram and trigram "
                                              "tables): fixed, so training and evaluation share one language")

    @model_validator(mode="after")
    def _span_order(self) -> "LanguageDataConfig":
        if self.span_min > self.span_max:
            raise ValueError(f"span_min ({self.span_min}) must not exceed span_max ({self.span_max})")
        return self


class LanguageTrainConfig(StrictModel):
    """Training of the language recipe; defaults are the paper's (REFERENCE.md §2.1): AdamW lr 1e-3,
    betas (0.9, 0.999), weight decay 0.05, constant lr, gradient clipping 1, batch 100, 50,000 steps."""

    steps: int = Field(50000, ge=1, description="optimizer steps")
    batch_size: int = Field(100, ge=1, description="sequences per step")
    lr: float = Field(1e-3, gt=0, description="AdamW learning rate (constant)")
    weight_decay: float = Field(0.05, ge=0, description="AdamW weight decay")
    grad_clip: float | None = Field(1.0, gt=0, description="clip the gradient norm to this; null = no clipping")
    compute_dtype: Literal["float32", "bfloat16"] = Field(
        "float32", description="dtype of the forward/backward (bfloat16 = autocast, for GPUs); weights stay float32")
    seed: int = Field(0, description="seed of the weights and of the training data stream")
    # left out of dumps at its default, so that runs made before the option keep their recipe hash
    pos_init: Literal["random", "sinusoidal"] = Field(
        "random", exclude_if=lambda value: value == "random",
        description="initial positional embeddings: TransformerLens's random init, or sinusoids (Vaswani et "
        "al. 2017) with the same row norm, under which 'attend to the previous position' is one linear map; "
        "learned either way")
    schedule: ScheduleConfig = Field(
        default_factory=lambda: ScheduleConfig(n_log=50, switch_step=1000, linear_every=1000),
        description="checkpoint steps: log-spaced, then linear")
    save_train_state: bool = Field(True, description=SAVE_TRAIN_STATE)


class LanguageRecipeConfig(StrictModel):
    """Recipe 'language': the attention-only transformer on synthetic text (the paper's language-model
    setup, REFERENCE.md §2.1, with offline data; configs/induction-paper.yaml). The default model is the
    paper's: 2 layers, 8 heads, d_model 256, d_head 32, context 1024, vocabulary 5000 (a GPU run)."""

    metric_groups: ClassVar[tuple[str, ...]] = TOKEN_METRIC_GROUPS

    name: Literal["language"] = Field("language", description="this recipe")
    model: ModelConfig = Field(default_factory=lambda: ModelConfig(
        n_layers=2, n_heads=8, d_model=256, d_head=32, n_ctx=1024, d_vocab=5000))
    data: LanguageDataConfig = Field(default_factory=LanguageDataConfig)
    train: LanguageTrainConfig = Field(default_factory=LanguageTrainConfig)

    @model_validator(mode="after")
    def _spans_fit(self) -> "LanguageRecipeConfig":
        if self.train.pos_init != "random" and self.model.positional_embedding_type == "rotary":
            raise ValueError(
                f"train.pos_init: {self.train.pos_init} needs positional embeddings, and "
                "model.positional_embedding_type: rotary has none (leave pos_init out)"
            )
        if 2 * self.data.span_max > self.model.n_ctx:
            raise ValueError(
                f"data.span_max ({self.data.span_max}) is too long for model.n_ctx ({self.model.n_ctx}): "
                "a span and its copy must both fit, so 2*span_max <= n_ctx"
            )
        return self


def _recipe_name(value: Any) -> str:
    """The recipe union's tag: ``name`` of a mapping (default 'induction') or of a recipe object."""
    if isinstance(value, dict):
        return value.get("name", "induction")
    return getattr(value, "name", "induction")


RECIPES: dict[str, type[StrictModel]] = {
    "induction": RecipeConfig,
    "icl-regression": ICLRegressionRecipeConfig,
    "language": LanguageRecipeConfig,
}

AnyRecipeConfig = Annotated[
    Union[
        Annotated[RecipeConfig, Tag("induction")],
        Annotated[ICLRegressionRecipeConfig, Tag("icl-regression")],
        Annotated[LanguageRecipeConfig, Tag("language")],
    ],
    Discriminator(
        _recipe_name,
        custom_error_type="recipe_name",
        custom_error_message=f"unknown recipe name; allowed: {', '.join(RECIPES)}",
    ),
]
"""A recipe config: the class is chosen by ``name`` (absent = 'induction')."""

AnyModelConfig = Union[ModelConfig, ICLModelConfig]
"""The architecture of a model family (attention-only or ICL-regression transformer)."""

MODEL_FAMILIES: dict[str, type[StrictModel]] = {"attn-only": ModelConfig, "icl-transformer": ICLModelConfig}
"""Model families by name (the ``model_family`` a checkpoint's metadata records) and their config class;
the models themselves are built by devinterp/models/families.py."""


def model_family(model: BaseModel) -> str:
    """The family name of a model config (``attn-only`` for :class:`ModelConfig`)."""
    for name, cls in MODEL_FAMILIES.items():
        if type(model) is cls:
            return name
    raise TypeError(f"{type(model).__name__} is not the config of a known model family ({', '.join(MODEL_FAMILIES)})")


def recipe_family(recipe: BaseModel) -> str:
    """The model family a recipe trains and measures."""
    return model_family(recipe.model)


# --------------------------------------------------------------------------------------------
# Sweep: what to measure at each checkpoint
# --------------------------------------------------------------------------------------------


# LLCSettings fields that say only how the chains are run, not what they compute (same noise, same
# minibatches, same numbers): measurement hashes leave them out, and settings frozen for a run take
# them from the current config.
LLC_EXECUTION_FIELDS = ("cuda_graph",)


class LLCSettings(StrictModel):
    """SGLD settings of one LLC estimate (REFERENCE.md §1.3): frozen for a whole sweep.

    Update: w <- w - (epsilon/2) * (nbeta * grad L_m(w) + gamma * (w - w*)) + sqrt(epsilon) * N(0, I).
    The estimate is nbeta * (mean sampled loss after burn-in - L_n(w*)).
    """

    epsilon: float = Field(1e-4, gt=0, description="SGLD step size")
    gamma: float = Field(100.0, ge=0, description="localization strength")
    nbeta: float | None = Field(
        None, gt=0, description="n*beta; null = n/log(n) with n the number of samples in the SGLD data"
    )
    chains: int = Field(4, ge=1, description="independent SGLD chains")
    draws: int = Field(200, ge=1, description="recorded draws per chain (after burn-in)")
    burnin: int = Field(100, ge=0, description="SGLD steps per chain discarded before the draws")
    thin: int = Field(1, ge=1, description="SGLD steps between recorded draws")
    batch_size: int = Field(32, ge=1, description="sequences per SGLD minibatch")
    init_loss_batches: int | None = Field(
        None, ge=1, description="batches averaged for L_n(w*); null = every sample of the SGLD data (exact)"
    )
    seed: int = Field(0, description="seed of the chains' noise and batch order (shared by all checkpoints)")
    noise_level: float = Field(
        1.0, ge=0, description="sigma, the scale of the injected noise; 1 samples the posterior, 0 is plain SGD (tests)"
    )
    backend: Literal["auto", "fused", "vmap", "sequential"] = Field(
        "auto",
        description="how chains advance together: fused (hand-batched forward of a known model), vmap "
        "(torch.func over any model), sequential (one chain after another); auto = fastest that applies",
    )
    compute_dtype: Literal["float32", "bfloat16"] = Field(
        "float32", description="dtype of the forward/backward (weights and the SGLD update stay float32); "
        "bfloat16 is ~1.6x faster on CPUs with AVX512-BF16 and on GPUs (BENCHMARKS.md)"
    )
    compile: bool = Field(
        False, description="torch.compile the fused forward (CUDA; the first estimate pays the compile time)"
    )
    cuda_graph: bool = Field(
        False, description="CUDA only: replay each SGLD step from one captured CUDA graph (removes the kernel-launch "
        "overhead of small models; same noise and minibatches, so the same numbers; falls back to the eager loop "
        "where capture fails)"
    )
    wbic: bool = Field(False, description="also report the local WBIC, n * mean sampled loss (REFERENCE.md §1.2)")


class ExecutorConfig(StrictModel):
    """Where a sweep measures its checkpoints. Every executor gives the same table (docs/sweeps.md).

    ``local`` with ``workers: 1`` measures in the calling process; ``workers: N`` > 1 uses a pool of N
    worker processes (spawned, ``sweep.threads`` torch threads each). ``ray`` sends one task per
    checkpoint to a Ray cluster (``address``; null starts a local one with ``workers`` CPUs).
    Workers only measure; the main process alone writes the Parquet files and the manifest.
    """

    kind: Literal["local", "ray"] = Field("local", description="local (in-process or process pool) or ray")
    workers: int = Field(1, ge=1, description="local: worker processes (1 = in the main process); "
                                              "ray: CPUs of the local cluster started when address is null")
    address: str | None = Field(None, description="ray: cluster address ('auto', 'ray://head:10001'); "
                                                  "null = start a local cluster on this machine")
    cpus_per_task: float = Field(1.0, gt=0, description="ray: CPUs requested per checkpoint task")
    gpus_per_task: float | None = Field(None, ge=0, description="ray: GPUs requested per checkpoint task; "
                                                                "null = 1 when device is cuda, else 0")
    max_retries: int = Field(3, ge=0, description="ray: retries of a checkpoint task whose worker died")
    runtime_env: dict[str, Any] | None = Field(None, description="ray: runtime_env of the tasks "
                                                                  "(e.g. {pip: [devinterp-phases]})")


class SweepConfig(StrictModel):
    metrics: list[Literal["loss", "icl_score", "heads", "llc", "head_llc", "token_loss", "position_loss"]] = Field(
        default_factory=lambda: ["loss", "icl_score", "heads", "llc"],
        description="metric groups measured at every checkpoint (head_llc: the weight-restricted LLC of "
                    "each head, about n_heads x the cost of llc; token_loss: per-token losses on a fixed "
                    "probe set, for essential dynamics; position_loss: icl-regression's held-out loss at "
                    "each context position k). Default for recipe icl-regression: [loss, llc, position_loss]",
    )
    eval_sequences: int = Field(512, ge=1, description="held-out sequences for loss and ICL score")
    eval_batch_size: int = Field(128, ge=1, description="sequences per forward pass in evaluation")
    eval_seed: int = Field(12345, description="seed of the held-out data (distinct from training)")
    head_sequences: int = Field(64, ge=1, description="sequences for the per-head scores")
    llc_sequences: int = Field(1024, ge=1, description="sequences in the SGLD data set (n)")
    llc: LLCSettings = Field(default_factory=LLCSettings)
    head_llc_heads: list[str] | None = Field(
        None, description="head_llc: the heads to measure, as 'L1H2' labels; null = every head of every layer"
    )
    token_loss_probes: int = Field(
        256, ge=2, description="token_loss: held-out token positions whose losses are recorded (fixed sample)"
    )
    calibrate: Literal["off", "auto"] = Field(
        "off",
        description="auto = choose epsilon/gamma (and burnin/draws, by the relaxation rule) with calibrate_llc "
                    "at the first and last checkpoints, the quartiles by index and the middle by step, before "
                    "the sweep (other llc settings as given), then freeze them in llc_settings.json",
    )
    calibrate_max_length_factor: float = Field(
        4.0, ge=1, description="calibrate auto: burnin and draws follow the relaxation rule (burn-in 3, draws 5 "
                               "relaxation times 2/(epsilon*gamma); calibrate_llc), lengthening sweep.llc's chains "
                               "to at most this factor x burnin + draws*thin; 1 = as configured",
    )
    threads: int = Field(1, ge=1, description="torch threads in the hot loops (1 is fastest for tiny models)")
    strict: bool = Field(False, description="fail (exit status 1) when any checkpoint failed; the rest are still measured")
    executor: ExecutorConfig = Field(default_factory=ExecutorConfig,
                                     description="where checkpoints are measured (local or a Ray cluster)")

    @field_validator("calibrate", mode="before")
    @classmethod
    def _yaml_off(cls, value: Any) -> Any:
        """YAML 1.1 reads an unquoted ``off`` (or ``no``, ``false``) as the boolean false: take it as 'off'."""
        if value is False:
            return "off"
        if value is True:
            raise ValueError("got true (YAML reads an unquoted on/yes/true as true): write auto or off")
        return value

    @field_validator("head_llc_heads")
    @classmethod
    def _head_labels(cls, heads: list[str] | None) -> list[str] | None:
        import re

        for label in heads or []:
            if not re.fullmatch(r"L\d+H\d+", label):
                raise ValueError(f"head label {label!r} is not of the form 'L<layer>H<head>', e.g. 'L1H2'")
        return heads


class SourceConfig(StrictModel):
    """Where a sweep's checkpoints come from, when they are not the recipe's own output.

    ``directory``: ``*.safetensors`` / ``*.pt`` / ``*.pth`` in ``path`` (steps from ``index.csv`` or the
    file names). ``huggingface``: revisions (``step{N}``, Pythia-style) of the model repo ``repo_id``,
    read from the local Hugging Face cache only; the hub is never contacted, so pre-fetch them first
    (``hf download REPO --revision step1000``).
    """

    kind: Literal["directory", "huggingface"] = Field("directory", description="directory or huggingface")
    path: Path | None = Field(None, description="directory: the checkpoint folder")
    repo_id: str | None = Field(None, description="huggingface: the model repo, e.g. 'org/name'")
    revisions: list[str] | None = Field(None, description="huggingface: revisions to read; null = every "
                                                           "step{N} revision found in the local cache")
    cache_dir: Path | None = Field(None, description="huggingface: the hub cache; null = HF_HUB_CACHE / "
                                                     "~/.cache/huggingface/hub")

    @model_validator(mode="after")
    def _needed_fields(self) -> "SourceConfig":
        if self.kind == "directory" and self.path is None:
            raise ValueError("a directory source needs path")
        if self.kind == "huggingface" and not self.repo_id:
            raise ValueError("a huggingface source needs repo_id")
        return self


# --------------------------------------------------------------------------------------------
# Detection and report
# --------------------------------------------------------------------------------------------


class DetectConfig(StrictModel):
    """Settings of :func:`devinterp.detect_stages` (REFERENCE.md §2.1, §5, §5.1; docs/detection.md).

    Boundaries are critical points of the LLC against the axis: a GP smoother's slope is tested
    against a simultaneous band whose false-boundary rate per run is ``alpha``.
    """

    method: Literal["changepoint", "critical", "consensus"] = Field(
        "critical",
        description="'critical': sign changes and significant dips of the smoothed LLC slope (the papers' "
        "method); 'changepoint': ruptures on the slope states of the signals; 'consensus': critical "
        "boundaries that the change-point detector also finds within `tolerance` checkpoints",
    )
    axis: Literal["auto", "log_step", "step", "checkpoint"] = Field(
        "auto", description="axis the smoother works on: 'auto' = whichever of log(step+c) (c = 1, 10, 100, ...) "
        "and the checkpoint index has the largest marginal likelihood (critical points do not depend on the "
        "axis; plateaus are still read against log(step+1)); or log(step+1), step, index")
    kernel: Literal["rbf", "matern52", "auto"] = Field(
        "matern52", description="GP smoother kernel: Matern-5/2 (rounds sharp changes of rate less than RBF); "
        "'auto' = the one with the larger marginal likelihood")
    signals: list[str] = Field(
        default_factory=lambda: ["llc", "loss", "prev_token", "induction"],
        description="signals of the change-point detector's multi-signal (per-head metrics: the head that "
        "moves most); the first one present that is measured at >= 3 checkpoints also stands in for a "
        "missing LLC",
    )
    algorithm: Literal["pelt", "binseg", "kernel"] = Field(
        "pelt", description="ruptures search of the change-point detector (kernel = KernelCPD, rbf)")
    penalty: Literal["bic"] | float = Field(
        "bic", description="change-point penalty: 'bic' = log(n) * sum of the slope-state noise variances, or a number")
    alpha: float = Field(
        0.05, gt=0, lt=1, description="false-boundary rate per run: slopes are tested against a Bonferroni "
        "band over the smoother's number of independent slopes")
    min_size: int = Field(2, ge=2, description="fewest checkpoints in a stage (a shared boundary counts in both)")
    n_stages: int | None = Field(None, ge=1, description="fix the number of stages instead of testing significance")
    significance: float = Field(2.0, gt=0, description="|d_llc| / stderr above which a stage is typed A or B")
    tolerance: int = Field(
        1, ge=0, description="checkpoints within which boundaries count as the same (bootstrap, consensus)")
    top_heads: int = Field(3, ge=1, description="heads named per stage from each per-head metric")
    drop_unhealthy: bool = Field(True, description="ignore LLC estimates flagged unhealthy (with a warning)")
    bootstrap: int = Field(100, ge=0, description="bootstrap resamples for boundary confidence (0 = off)")
    seed: int = Field(0, description="seed of the bootstrap")


class ReportConfig(StrictModel):
    title: str | None = Field(None, description="report title; null = the run name")
    step_axis: Literal["auto", "log", "linear"] = Field(
        "auto", description="step axis of the figures; auto = log when steps span two decades or more"
    )


class RunConfig(StrictModel):
    """A whole run: train (or read) checkpoints, sweep them, detect stages, write the report."""

    name: str = Field("run", min_length=1, pattern=r"^[A-Za-z0-9_.\-]+$", description="run name = output folder")
    device: str = Field("cpu", description="torch device for training and measurement")
    checkpoints: Path | None = Field(None, description="a user's own checkpoint folder instead of training")
    source: SourceConfig | None = Field(None, description="checkpoints from elsewhere (a folder, Hugging Face "
                                                          "revisions) instead of training; see SourceConfig")
    recipe: AnyRecipeConfig = Field(default_factory=RecipeConfig)
    sweep: SweepConfig = Field(default_factory=SweepConfig)
    detect: DetectConfig = Field(default_factory=DetectConfig)
    report: ReportConfig = Field(default_factory=ReportConfig)

    @model_validator(mode="after")
    def _one_source(self) -> "RunConfig":
        if self.checkpoints is not None and self.source is not None:
            raise ValueError("give either checkpoints (a folder) or source, not both")
        return self

    @model_validator(mode="after")
    def _metrics_fit_recipe(self) -> "RunConfig":
        """Metric groups must apply to the recipe's model family; a recipe may change the default list."""
        recipe = type(self.recipe)
        default = getattr(recipe, "default_metrics", None)
        if default is not None and "metrics" not in self.sweep.model_fields_set:
            self.sweep.metrics = list(default)
            self.sweep.model_fields_set.discard("metrics")  # still "not given": a re-validation re-applies it
        allowed = recipe.metric_groups
        wrong = [(i, g) for i, g in enumerate(self.sweep.metrics) if g not in allowed]
        if wrong:
            i, group = wrong[0]
            raise ConfigErrorAt(
                ("sweep", "metrics", i),
                f"group {group!r} does not apply to recipe {self.recipe.name!r} "
                f"({_GROUP_NEEDS.get(group, 'not measurable for this model family')}); "
                f"groups of this recipe: {', '.join(allowed)}",
            )
        return self

    def hash(self) -> str:
        """Short, stable hash of the resolved config (sha256 of its canonical JSON)."""
        return config_hash(self)


def config_hash(model: BaseModel) -> str:
    """sha256 (first 16 hex digits) of a model's canonical JSON dump."""
    blob = json.dumps(model.model_dump(mode="json"), sort_keys=True).encode()
    return hashlib.sha256(blob).hexdigest()[:16]


def _format_errors(err: ValidationError, source: str) -> str:
    lines = []
    for e in err.errors():
        loc, msg = list(e["loc"]), e["msg"]
        if len(loc) >= 2 and loc[0] == "recipe" and loc[1] in RECIPES:
            del loc[1]  # the union's tag: the YAML has no such level
        cause = (e.get("ctx") or {}).get("error")
        if isinstance(cause, ConfigErrorAt):
            loc, msg = [*loc, *cause.loc], cause.message
        if e["type"] == "recipe_name":
            loc, e = [*loc, "name"], {**e, "input": _recipe_name(e.get("input"))}
        field = ".".join(str(p) for p in loc) or "(top level)"
        if e["type"] == "extra_forbidden":
            msg = "unknown key"
        msg = msg.removeprefix("Value error, ")  # pydantic's prefix for a validator's ValueError
        got = e.get("input")
        shown = "" if e["type"] in ("extra_forbidden", "missing") or isinstance(got, dict) else f" (got {got!r})"
        lines.append(f"{source}: {field}: {msg}{shown}")
    return "\n".join(lines)


def with_metrics(config: RunConfig, groups: list[str], source: str = "<metrics>") -> RunConfig:
    """``config`` measuring ``groups`` instead of ``sweep.metrics`` (validated for its recipe; errors
    name ``source``). The metric list is not part of a run's settings hash: same run folder."""
    return parse_config({**config.model_dump(), "sweep": {**config.sweep.model_dump(), "metrics": list(groups)}},
                        source)


def parse_config(data: Any, source: str = "<config>") -> RunConfig:
    """Validate a mapping into a :class:`RunConfig`; errors name ``source`` and the field."""
    if data is None:
        data = {}
    if not isinstance(data, dict):
        raise ConfigError(f"{source}: the top level must be a mapping of settings, got {type(data).__name__}")
    try:
        return RunConfig.model_validate(data)
    except ValidationError as err:
        raise ConfigError(_format_errors(err, source)) from None


def load_config(path: str | Path) -> RunConfig:
    """Read a YAML file into a validated :class:`RunConfig`.

    Relative ``checkpoints`` paths are resolved against the YAML file's folder.
    Raises :class:`ConfigError` naming the file (and the field) on any problem.
    """
    path = Path(path)
    if not path.is_file():
        raise ConfigError(f"{path}: no such config file")
    try:
        data = yaml.safe_load(path.read_text())
    except yaml.YAMLError as err:
        raise ConfigError(f"{path}: not valid YAML: {err}") from None
    cfg = parse_config(data, str(path))
    if cfg.checkpoints is not None and not cfg.checkpoints.is_absolute():
        cfg.checkpoints = (path.parent / cfg.checkpoints).resolve()
    for key in ("path", "cache_dir"):
        value = getattr(cfg.source, key, None)
        if value is not None and not value.is_absolute():
            setattr(cfg.source, key, (path.parent / value).resolve())
    return cfg


def dump_config(cfg: RunConfig) -> str:
    """The resolved config as YAML (every default filled in)."""
    return yaml.safe_dump(cfg.model_dump(mode="json"), sort_keys=False)


def config_reference(model: type[BaseModel] = RunConfig, prefix: str = "", defaults: BaseModel | None = None) -> str:
    """Markdown table of every setting (dotted key, default, description), for docs/config.md.

    ``defaults``: an instance whose values are the defaults (a sub-model's default may differ from its
    class's own, e.g. the regression recipe's checkpoint schedule). The recipe union is listed as the
    default recipe's keys (``recipe.*``), then each other recipe's as ``recipe[<name>].*``.
    """
    rows = []
    for name, field in model.model_fields.items():
        key = f"{prefix}{name}"
        if model is RunConfig and name == "recipe":  # the recipe union: the default recipe, then the others
            rows.append(config_reference(RecipeConfig, key + "."))
            for tag, other in RECIPES.items():
                if other is not RecipeConfig:
                    rows.append(config_reference(other, f"{key}[{tag}]."))
            continue
        if defaults is not None:
            default = getattr(defaults, name)
        else:
            default = field.default_factory() if field.default_factory is not None else field.default
        sub = field.annotation if isinstance(field.annotation, type) and issubclass(field.annotation, BaseModel) else None
        if sub is not None:
            rows.append(config_reference(sub, key + ".", default if isinstance(default, BaseModel) else None))
            continue
        rows.append(f"| `{key}` | `{json.dumps(default, default=str)}` | {field.description or ''} |")
    body = "\n".join(rows)
    if prefix:
        return body
    return "| key | default | meaning |\n|---|---|---|\n" + body + "\n"
