"""The recipe: one YAML file that says what to compress, how, and what counts as success.

Every model forbids unknown fields, so a misspelled key is an error at load time rather than a
silently ignored option. A section you write is on (``enabled`` defaults to true); a pruning or
quantization section you leave out is off. Input paths (``model.weights``, ``data.npz``) are
resolved against the recipe file's folder by :func:`prunekit.recipes.loader.load_recipe`;
``output_dir`` is relative to where the command runs.

Range errors are raised as ``PydanticCustomError`` with a final message (``must be in (0, 1),
got 1.5``) so the loader can print them unchanged after the key path.
"""

from __future__ import annotations

import re
from typing import Annotated, Any, Literal

from pydantic import AfterValidator, BaseModel, ConfigDict, Field, field_validator, model_validator
from pydantic_core import PydanticCustomError

from prunekit import defaults

_IMPORT_REF = re.compile(r"^[A-Za-z_][\w.]*:[A-Za-z_]\w*(\.[A-Za-z_]\w*)*$")


def _interval(low: float | None, high: float | None, *, low_closed: bool, high_closed: bool) -> AfterValidator:
    """A validator for ``low <(=) v <(=) high`` whose error reads ``must be in (low, high], got v``."""
    if high is None:
        text = f"must be {'>=' if low_closed else '>'} {low:g}"
    else:
        text = f"must be in {'[' if low_closed else '('}{low:g}, {high:g}{']' if high_closed else ')'}"

    def check(value: float) -> float:
        ok = value >= low if low_closed else value > low
        if high is not None:
            ok = ok and (value <= high if high_closed else value < high)
        if not ok:
            raise PydanticCustomError("prunekit_range", f"{text}, got {value!r}")
        return value

    return AfterValidator(check)


Ratio = Annotated[float, _interval(0, 1, low_closed=False, high_closed=False)]  # removed fraction
MAX_TARGET_RATIO = 0.95  # the largest fraction of a metric one recipe may ask pruning to remove
LayerRatio = Annotated[float, _interval(0, 1, low_closed=True, high_closed=False)]  # 0 keeps the layer whole
Probability = Annotated[float, _interval(0, 1, low_closed=True, high_closed=True)]
Positive = Annotated[float, _interval(0, None, low_closed=False, high_closed=False)]
NonNegative = Annotated[float, _interval(0, None, low_closed=True, high_closed=False)]
Count = Annotated[int, _interval(0, None, low_closed=True, high_closed=False)]
PositiveInt = Annotated[int, _interval(1, None, low_closed=True, high_closed=False)]


def _check_import_ref(value: str | None) -> str | None:
    if value is not None and not _IMPORT_REF.match(value):
        raise PydanticCustomError(
            "prunekit_ref", f"must look like 'package.module:function', got {value!r}"
        )
    return value


ImportRef = Annotated[str | None, AfterValidator(_check_import_ref)]


def _exactly_one(section: str, values: dict[str, Any]) -> None:
    given = [k for k, v in values.items() if v is not None]
    if len(given) != 1:
        names = " or ".join(f"'{k}'" for k in values)
        got = "none" if not given else " and ".join(f"'{k}'" for k in given)
        raise PydanticCustomError("prunekit_one_of", f"give exactly one of {names}, got {got}")


def _check_builtin(name: str | None, table: dict, what: str) -> str | None:
    import difflib

    if name is not None and name not in table:
        close = difflib.get_close_matches(name, list(table), n=1)
        hint = f"; did you mean '{close[0]}'?" if close else f"; known: {', '.join(sorted(table))}"
        raise PydanticCustomError("prunekit_name", f"unknown built-in {what} {name!r}{hint}")
    return name


class _Section(BaseModel):
    model_config = ConfigDict(extra="forbid", validate_assignment=True)


class TrainSpec(_Section):
    """Training a baseline from scratch before compressing it (the demo has no pretrained weights)."""

    epochs: Count = 8
    lr: Positive = 0.05
    optimizer: Literal["sgd", "adam", "adamw"] = "sgd"
    weight_decay: NonNegative = 5e-4


class ModelSpec(_Section):
    """Where the model comes from: a built-in name or an importable factory, plus optional weights."""

    builtin: str | None = None
    factory: ImportRef = None
    hf: str | None = None  # a Hugging Face checkpoint folder or installed package (offline); task from data.task
    kwargs: dict[str, Any] = Field(default_factory=dict)
    weights: str | None = None  # .safetensors, or a .pt/.pth/.bin state dict (weights_only=True)
    example_input_shape: list[PositiveInt] | None = None  # e.g. [1, 1, 8, 8]; else one data batch
    train_baseline: TrainSpec | None = None

    @field_validator("builtin")
    @classmethod
    def _known_builtin(cls, value: str | None) -> str | None:
        from prunekit.models import BUILTIN_MODELS

        return _check_builtin(value, BUILTIN_MODELS, "model")

    @model_validator(mode="after")
    def _one_source(self) -> ModelSpec:
        _exactly_one("model", {"builtin": self.builtin, "factory": self.factory, "hf": self.hf})
        return self


class TextSpec(_Section):
    """Text for a Hugging Face model: a file/folder, a factory yielding strings (or (text, label)), or Brown.

    Tokenized with the model's own tokenizer to at most ``max_length`` tokens; batches are
    bucketed by length so each is padded only to its longest text.
    """

    files: str | None = None  # one text per line; a folder of *.txt (class sub-folders give labels)
    factory: ImportRef = None  # returns an iterable of strings or (string, int label) pairs
    builtin: Literal["brown"] | None = None  # the Brown corpus, labelled by genre (15 classes)
    kwargs: dict[str, Any] = Field(default_factory=dict)
    max_length: PositiveInt = 128

    @model_validator(mode="after")
    def _one_source(self) -> TextSpec:
        _exactly_one("text", {"files": self.files, "factory": self.factory, "builtin": self.builtin})
        return self


class DataSpec(_Section):
    """Where the data comes from: a built-in set, an ``.npz`` file (x, y[, x_val, y_val][, x_test, y_test]) or a factory."""

    builtin: str | None = None
    npz: str | None = None
    factory: ImportRef = None
    text: TextSpec | None = None  # text for a model.hf checkpoint
    kwargs: dict[str, Any] = Field(default_factory=dict)
    batch_size: PositiveInt = 64
    calib_samples: PositiveInt = 256
    task: Literal["classification", "regression", "embedding", "causal_lm"] = "classification"
    val_fraction: LayerRatio = 0.15  # carved from x when the npz has no x_val/y_val; 0 needs x_val/y_val
    test_fraction: Ratio = 0.2  # ignored when the npz holds x_test/y_test

    @field_validator("builtin")
    @classmethod
    def _known_builtin(cls, value: str | None) -> str | None:
        from prunekit.data import BUILTIN_DATASETS

        return _check_builtin(value, BUILTIN_DATASETS, "data set")

    @model_validator(mode="after")
    def _one_source(self) -> DataSpec:
        _exactly_one("data", {"builtin": self.builtin, "npz": self.npz, "factory": self.factory, "text": self.text})
        if self.val_fraction + self.test_fraction >= 1:
            raise PydanticCustomError(
                "prunekit_split",
                f"val_fraction + test_fraction must be < 1 to leave training data, "
                f"got {self.val_fraction:g} + {self.test_fraction:g}",
            )
        return self


class TargetSpec(_Section):
    """How much to remove, measured on one metric: ``ratio`` is the fraction to REMOVE."""

    metric: Literal["macs", "params", "channels", "latency"] = defaults.PRUNE_TARGET  # latency: ORT p50, batch 1
    ratio: Ratio = defaults.PRUNE_RATIO

    @field_validator("ratio")
    @classmethod
    def _leaves_something(cls, value: float) -> float:
        if value > MAX_TARGET_RATIO:  # the pruner caps one cut here: asking more would be silently clamped
            raise PydanticCustomError(
                "prunekit_range", f"must be at most {MAX_TARGET_RATIO} (every layer keeps at least 5% of its "
                f"channels so the model can still learn), got {value!r}")
        return value


class ScheduleSpec(_Section):
    """How the target is reached: at once, in equal steps, on a cubic ramp, or adaptively."""

    kind: Literal["oneshot", "iterative", "cubic", "adaptive"] = "oneshot"
    steps: PositiveInt = 1
    finetune_epochs_between: Count = 0
    # adaptive: how far the VALIDATION LOSS may rise above the dense model's (absolute, in loss units;
    # default 0.05), not an accuracy drop: the loss moves before accuracy does and works for regression too
    tolerance: NonNegative | None = None
    initial_step: Ratio | None = None  # adaptive: first step's removed fraction

    @model_validator(mode="after")
    def _knobs_fit_kind(self) -> ScheduleSpec:
        if self.kind == "oneshot" and self.steps != 1:
            raise PydanticCustomError(
                "prunekit_schedule", f"a oneshot schedule has steps: 1, got {self.steps}; use kind: iterative"
            )
        if self.kind != "adaptive" and (self.tolerance is not None or self.initial_step is not None):
            raise PydanticCustomError(
                "prunekit_schedule",
                f"tolerance and initial_step apply to kind: adaptive only, got kind: {self.kind}",
            )
        return self


class SparsityTrainingSpec(_Section):
    """Regularized training before the cut, so the criterion finds groups already near zero.

    ``bn_scale`` is network slimming (L1 on BatchNorm gamma, pair it with ``criterion: bn_scale``);
    ``group_lasso`` drives whole channel groups to zero (L2,1 over each group's slices).
    """

    epochs: Count = 0
    lr: Positive = 0.01
    l1: NonNegative = 0.0
    l2: NonNegative = 0.0
    bn_scale: NonNegative = 0.0
    group_lasso: NonNegative = 0.0


class PruningSpec(_Section):
    """Structured (channel) or fine-grained (unstructured, N:M) pruning."""

    enabled: bool = True
    criterion: str = defaults.CRITERION  # checked against the criteria registry by the runner
    target: TargetSpec = Field(default_factory=TargetSpec)
    scope: Literal["global", "local"] = defaults.PRUNE_SCOPE
    schedule: ScheduleSpec = Field(default_factory=ScheduleSpec)
    round_to: PositiveInt = defaults.ROUND_TO  # measured: odd widths ran slower than dense in ORT (benchmarks/vs_torch_pruning.py)
    min_keep: PositiveInt = defaults.MIN_KEEP
    ignore: list[str] = Field(default_factory=list)  # module names never pruned
    per_layer: dict[str, LayerRatio] = Field(default_factory=dict)  # module name -> removed fraction
    granularity: Literal["structured", "unstructured", "nm"] = "structured"
    nm: tuple[PositiveInt, PositiveInt] | None = None  # (n, m): keep n of every m weights
    method: Literal["magnitude", "wanda", "sparsegpt"] = "magnitude"  # unstructured/nm: one-shot LLM pruning
    allocation: Literal["criterion", "sensitivity"] = "criterion"  # sensitivity: non-uniform ratios from scans
    sensitivity_ratios: list[Ratio] = Field(default_factory=lambda: [0.1, 0.3, 0.5, 0.7, 0.9], min_length=1)
    depth_blocks: Count = 0  # remove this many whole bypassable blocks (least output change) before the cut
    vocabulary: Literal["keep", "corpus"] = "keep"  # model.hf encoders: keep only the token rows the train text uses
    sparsity_training: SparsityTrainingSpec = Field(default_factory=SparsityTrainingSpec)
    allow_no_op: bool = False  # true: a cut that removes nothing is a warning, not an error
    # transformers: the consumers of the removed heads / FFN channels refit on the calibration batches, block by
    # block (prunekit.pruning.oneshot.reconstruct_plan); relative weighting keeps massive tokens from dominating
    reconstruct: Literal["none", "bias", "least_squares", "least_squares_dense"] = "none"
    reconstruct_weighting: Literal["uniform", "relative"] = "uniform"

    @model_validator(mode="after")
    def _nm_fits_granularity(self) -> PruningSpec:
        if self.granularity == "nm" and self.nm is None:
            raise PydanticCustomError("prunekit_nm", "granularity: nm needs nm: [n, m], e.g. nm: [2, 4]")
        if self.granularity != "nm" and self.nm is not None:
            raise PydanticCustomError(
                "prunekit_nm", f"nm is only used with granularity: nm, got granularity: {self.granularity}"
            )
        if self.method != "magnitude" and self.granularity == "structured":
            raise PydanticCustomError("prunekit_method", f"method: {self.method} needs granularity: unstructured or "
                                      "nm (structured pruning is chosen by 'criterion')")
        if self.nm is not None and not self.nm[0] < self.nm[1]:
            raise PydanticCustomError("prunekit_nm", f"nm: [n, m] needs n < m, got {list(self.nm)}")
        if self.allocation == "sensitivity" and (self.granularity != "structured" or self.schedule.kind != "oneshot"
                                                 or self.target.metric == "channels"):
            raise PydanticCustomError(
                "prunekit_allocation", "allocation: sensitivity needs granularity: structured, schedule kind: "
                f"oneshot and target metric macs or params, got {self.granularity}, {self.schedule.kind}, "
                f"{self.target.metric}")
        if self.reconstruct != "none" and (self.granularity != "structured" or self.allocation != "criterion"):
            raise PydanticCustomError(
                "prunekit_reconstruct", f"reconstruct: {self.reconstruct} refits after a structured cut chosen by "
                f"'criterion'; got granularity {self.granularity}, allocation {self.allocation}")
        return self


class DistillSpec(_Section):
    """Knowledge distillation from the dense model during recovery."""

    enabled: bool = True
    temperature: Positive = defaults.DISTILL_TEMPERATURE
    alpha: Probability = defaults.DISTILL_ALPHA  # weight of the distillation term; 1 - alpha on the labels
    layerwise: bool = False  # also match every transformer layer's output (MSE), for model.hf recipes


class RecoverySpec(_Section):
    """Fine-tuning after pruning; ``epochs: 0`` keeps only BN recalibration."""

    epochs: Count = 0
    lr: Positive = defaults.LR
    optimizer: Literal["sgd", "adam", "adamw"] = defaults.OPTIMIZER
    scheduler: Literal["cosine", "step", "onecycle", "constant"] = defaults.SCHEDULER
    # fraction of the steps spent ramping the rate up linearly first (higher rates on pretrained transformers)
    warmup: Annotated[float, _interval(0, 1, low_closed=True, high_closed=False)] = 0.0
    momentum: Annotated[float, _interval(0, 1, low_closed=True, high_closed=False)] = defaults.MOMENTUM
    weight_decay: NonNegative = defaults.WEIGHT_DECAY
    bn_recalibration: bool = True
    early_stopping_patience: PositiveInt | None = None
    # model.hf: keep the vocabulary table fixed while recovering (half of a small encoder's parameters)
    freeze_embeddings: bool = False
    # the model's dropout while recovering: null keeps its own, 0 turns it off (distilling to a fixed teacher)
    dropout: Annotated[float, _interval(0, 1, low_closed=True, high_closed=False)] | None = None
    distillation: DistillSpec = Field(default_factory=lambda: DistillSpec(enabled=False))

    @model_validator(mode="after")
    def _one_warmup(self) -> RecoverySpec:
        if self.warmup > 0 and self.scheduler == "onecycle":
            raise PydanticCustomError("prunekit_warmup", "warmup with scheduler 'onecycle' would warm up twice; "
                                      "use scheduler 'cosine' or 'constant', or warmup 0")
        return self


class WeightOnlySpec(_Section):
    """Linear weights stored as int8 (per row) or int4 (per row and group), dequantized on load."""

    bits: Literal[4, 8] = 8
    group_size: PositiveInt = 128


class QuantizationSpec(_Section):
    """Int8 quantization through ONNX Runtime (static, dynamic) or fake-quant training (qat)."""

    enabled: bool = True
    mode: Literal["static", "dynamic", "qat"] = "static"
    method: Literal["minmax", "percentile", "entropy"] = "minmax"
    percentile: Annotated[float, _interval(0, 100, low_closed=False, high_closed=True)] = 99.99
    calibration_samples: PositiveInt = 256
    per_channel: bool = True
    per_layer_speed: bool = True  # keep in float each layer whose int8 version is measured slower
    weight_only: WeightOnlySpec | None = None  # also report a weight-only int8/int4 size option
    order: Literal["sequential", "joint"] = "sequential"
    tolerance: NonNegative | None = 0.01  # max accuracy drop int8 vs float; None = never fall back
    qat_epochs: Count = 2


class ExportSpec(_Section):
    """ONNX export (needed for latency measurement and int8)."""

    onnx: bool = True  # must stay true: ONNX Runtime is how prunekit measures the deployed models
    opset: Annotated[int, _interval(13, 23, low_closed=True, high_closed=True)] = 17

    @field_validator("onnx")
    @classmethod
    def _onnx_is_how_we_measure(cls, value: bool) -> bool:
        if not value:
            raise PydanticCustomError(
                "prunekit_onnx", "false is not supported: every latency, size and accuracy figure of the report is "
                "measured on the ONNX export; remove export.onnx (it is always on)")
        return value


class EvaluationSpec(_Section):
    """What is measured on the dense and compressed models, and what counts as success."""

    batch_sizes: list[PositiveInt] = Field(default_factory=lambda: [1, 32], min_length=1)
    latency_runs: PositiveInt = 50
    warmup_runs: Count = 5
    max_accuracy_drop: NonNegative | None = 0.01
    kfold: Count = 0  # 0 = off; k >= 2 runs K-fold CV of the compressed model
    energy: bool = True
    memory: bool = True  # peak memory of ONNX Runtime inference, measured in a fresh process
    pytorch_latency: bool = True  # also time PyTorch eager, beside ONNX Runtime
    threads: PositiveInt | None = None  # ORT intra-op threads for every timing AND speed decision; None: physical cores

    @field_validator("kfold")
    @classmethod
    def _kfold_off_or_two(cls, value: int) -> int:
        if value == 1:
            raise PydanticCustomError("prunekit_kfold", "must be 0 (off) or >= 2, got 1")
        return value

    @field_validator("batch_sizes")
    @classmethod
    def _unique_sizes(cls, value: list[int]) -> list[int]:
        if len(set(value)) != len(value):
            raise PydanticCustomError("prunekit_unique", f"must not repeat a batch size, got {value}")
        return value


class Recipe(_Section):
    """A whole compression run. See ``examples/digits_demo.yaml`` for every field with a comment."""

    name: Annotated[str, Field(min_length=1, pattern=r"^[\w.-]+$")]
    seed: Count = 0
    output_dir: str | None = None  # default: runs/<name>
    train_threads: PositiveInt | None = None  # fix torch threads while training so accuracy reproduces across machines
    model: ModelSpec
    data: DataSpec
    pruning: PruningSpec = Field(default_factory=lambda: PruningSpec(enabled=False))
    recovery: RecoverySpec = Field(default_factory=RecoverySpec)
    quantization: QuantizationSpec = Field(default_factory=lambda: QuantizationSpec(enabled=False))
    export: ExportSpec = Field(default_factory=ExportSpec)
    evaluation: EvaluationSpec = Field(default_factory=EvaluationSpec)

    @model_validator(mode="after")
    def _default_output_dir(self) -> Recipe:
        if self.output_dir is None:
            object.__setattr__(self, "output_dir", f"runs/{self.name}")
        return self

    @model_validator(mode="after")
    def _text_pairs_hf(self) -> Recipe:
        text_task = self.data.task in ("embedding", "causal_lm")
        if (self.model.hf is not None) != (self.data.text is not None):
            raise PydanticCustomError("prunekit_text", "model.hf and data.text go together: a Hugging Face "
                                      "model reads text tokenized by its own tokenizer")
        if text_task and self.model.hf is None:
            raise PydanticCustomError("prunekit_text", f"data.task: {self.data.task} needs model.hf and data.text")
        if self.pruning.vocabulary == "corpus" and (self.model.hf is None or self.data.task == "causal_lm"):
            raise PydanticCustomError("prunekit_text", "pruning.vocabulary: corpus needs a model.hf encoder "
                                      f"(task embedding or classification), got task {self.data.task}")
        if self.recovery.freeze_embeddings and self.model.hf is None:
            raise PydanticCustomError("prunekit_text", "recovery.freeze_embeddings needs a model.hf checkpoint "
                                      "(it fixes the vocabulary table); remove it for this model")
        if self.model.hf is not None and self.data.task == "regression":
            raise PydanticCustomError("prunekit_text", "a model.hf recipe has task classification, embedding or "
                                      "causal_lm, got regression")
        if self.model.hf is not None and self.quantization.enabled and self.quantization.mode == "qat":
            raise PydanticCustomError("prunekit_text", "quantization.mode: qat is not wired for model.hf recipes; "
                                      "use mode: dynamic (or static)")
        return self
