"""The run configuration: typed, validated when built, loaded from YAML or a packaged preset."""

from __future__ import annotations

import itertools
import json
import types
from collections.abc import Sequence
from dataclasses import dataclass
from importlib import resources
from pathlib import Path
from typing import Annotated, Any, Literal, Union, get_args, get_origin

import yaml
from pydantic import BaseModel, ConfigDict, Field, SerializeAsAny, ValidationError, field_validator, model_validator

from modelshrink.data.tasks import DEFAULT_MODEL, TASK_INPUT, DataConfig
from modelshrink.errors import ConfigError, ModelshrinkError, UnknownNameError
from modelshrink.models.builders import MODEL_INPUT, MODELS, ModelConfig
from modelshrink.raw_yaml import non_finite as _non_finite
from modelshrink.raw_yaml import too_big as _too_big
from modelshrink.store import config_key
from modelshrink.techniques.base import TECHNIQUES, TechniqueConfig, parse_technique_config
from modelshrink.train import TrainConfig


class VariantConfig(BaseModel):
    """A named, ordered pipeline of techniques applied to the baseline."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    name: str = Field(min_length=1)
    # SerializeAsAny: dump each step with its own class's fields, not just the base's `kind`.
    steps: tuple[SerializeAsAny[TechniqueConfig], ...] = ()  # empty: the baseline itself
    # baseline: techniques that train fine-tune the trained baseline (TFMOT's advice);
    # scratch: they start from freshly initialised weights (what the thesis did).
    start: Literal["baseline", "scratch"] = "baseline"

    @field_validator("steps", mode="before")
    @classmethod
    def _parse_steps(cls, raw: Any) -> tuple[TechniqueConfig, ...]:
        if not isinstance(raw, list | tuple):
            raise ValueError(f"steps must be a list of techniques, got {type(raw).__name__}")
        try:
            return tuple(parse_technique_config(step) for step in raw)
        except ModelshrinkError as err:  # unknown technique: keep the list of known names
            raise ValueError(str(err)) from err


class RunConfig(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid")

    data: DataConfig = DataConfig()
    model: ModelConfig = ModelConfig()
    train: TrainConfig = TrainConfig()
    seeds: tuple[Annotated[int, Field(ge=0, lt=2**32)], ...] = Field((0,), min_length=1)  # numpy's seed range
    variants: tuple[VariantConfig, ...] = (VariantConfig(name="baseline"),)
    latency_threads: int = Field(1, ge=1, description="ONNX Runtime threads when running artifacts (accuracy, latency)")
    executorch: bool = Field(  # left out of dumps when off, so older configs keep their hashes
        False,
        exclude_if=lambda v: not v,
        description="also write and measure ExecuTorch .pte programs (fp32, int8; "
        "needs the executorch extra; minutes per LSTM program)",
    )

    @model_validator(mode="before")
    @classmethod
    def _expand_lists(cls, raw: Any) -> Any:
        if isinstance(raw, dict) and isinstance(raw.get("variants"), list | tuple):
            return {**raw, "variants": [v for variant in raw["variants"] for v in expand_variant(variant)]}
        return raw

    @model_validator(mode="after")
    def _unique_names(self) -> RunConfig:
        names = [v.name for v in self.variants]
        dupes = sorted({n for n in names if names.count(n) > 1})
        if dupes:
            raise ValueError(f"variant names must be unique; repeated: {', '.join(dupes)}")
        return self


# -- parameter lists ---------------------------------------------------------------------------
def _is_sequence_type(annotation: Any) -> bool:
    origin = get_origin(annotation)
    if origin in (Union, types.UnionType, Annotated):
        return any(_is_sequence_type(a) for a in get_args(annotation))
    return (origin or annotation) in (list, tuple, set, frozenset, Sequence)


def _is_value_list(kind: Any, key: str, value: Any) -> bool:
    """A list in a step expands into variants, unless the field itself takes a list (then a list of lists does)."""
    if not isinstance(value, list) or key == "kind":
        return False
    tech = TECHNIQUES.get(kind) if isinstance(kind, str) else None
    field = tech.config_cls.model_fields.get(key) if tech else None
    if field is None:
        return False  # unknown technique or key: left for validation to name
    return not _is_sequence_type(field.annotation) or all(isinstance(v, list) for v in value)


def _label(value: Any) -> str:
    return value if isinstance(value, str) else json.dumps(value)


def expand_variant(raw: Any) -> list[Any]:
    """One variant per combination of the values listed in its steps (a grid, in listed order).

    `{name: pruned, steps: [{kind: prune.magnitude, final_sparsity: [0.5, 0.7]}]}` gives
    `pruned[final_sparsity=0.5]` and `pruned[final_sparsity=0.7]`; several lists give their product.
    A key listed in two steps is named `kind.key` in the variant name.
    """
    if not isinstance(raw, dict) or not isinstance(raw.get("steps"), list | tuple):
        return [raw]
    steps = list(raw["steps"])
    axes = [(i, key, values) for i, step in enumerate(steps) if isinstance(step, dict)
            for key, values in step.items() if _is_value_list(step.get("kind"), key, values)]  # fmt: skip
    if not axes:
        return [raw]
    for i, key, values in axes:
        if not values:
            raise ValueError(
                f"variant {raw.get('name')!r}: steps.{i}.{key}: an empty list of values gives no variant; "
                f"list at least one value"
            )
    keys = [key for _, key, _ in axes]
    names = [f"{steps[i]['kind']}.{key}" if keys.count(key) > 1 else key for i, key, _ in axes]
    out = []
    for combo in itertools.product(*(values for _, _, values in axes)):
        new_steps = [dict(s) if isinstance(s, dict) else s for s in steps]
        for (i, key, _), value in zip(axes, combo, strict=True):
            new_steps[i][key] = value
        suffix = ",".join(f"{n}={_label(v)}" for n, v in zip(names, combo, strict=True))
        name = f"{raw.get('name', '')}[{suffix}]"
        for i in {i for i, _, _ in axes}:  # name the expanded variant in errors, not its index in the grid
            try:
                TECHNIQUES[new_steps[i]["kind"]].config_cls.model_validate(new_steps[i])
            except ValidationError as err:
                first = err.errors()[0]
                loc = ".".join(str(p) for p in first["loc"])
                raise ValueError(
                    f"variant {name!r}: steps.{i}.{loc}: {first['msg']} (got {first.get('input')!r})"
                ) from err
        out.append({**raw, "name": name, "steps": new_steps})
    return out


def _format_validation(err: ValidationError, where: str) -> str:
    first = err.errors()[0]
    loc = ".".join(str(p) for p in first["loc"]) or "(top level)"
    msg = first["msg"].removeprefix("Value error, ")
    if first["type"] == "extra_forbidden":
        msg = "unknown key; check its spelling against `modelshrink list` and the README"
    shown = first["type"] != "extra_forbidden" and "input" in first and first["loc"]  # not the whole config
    got = f" (got {first['input']!r})" if shown else ""
    more = f" (and {err.error_count() - 1} more)" if err.error_count() > 1 else ""
    return f"{where}: {loc}: {msg}{got}{more}"


def _unwrap(ann: Any) -> Any:
    while get_origin(ann) in (Annotated, Union, types.UnionType):
        ann = next(a for a in get_args(ann) if a is not type(None))
    return ann


def _field_type(raw: Any, loc: tuple[str | int, ...]) -> Any:
    """The type the RunConfig field at `loc` holds (a step's fields by its `kind`); None when unknown."""
    ann: Any = RunConfig
    for part in loc:
        ann = _unwrap(ann)
        if isinstance(part, int):  # an item of a list: the list's item type (a grid's values: the field's own)
            args = get_args(ann)
            ann = args[0] if _is_sequence_type(ann) and args else ann
        else:
            if ann is TechniqueConfig and isinstance(raw, dict) and str(raw.get("kind")) in TECHNIQUES:
                ann = TECHNIQUES[str(raw["kind"])].config_cls
            field = ann.model_fields.get(part) if isinstance(ann, type) and issubclass(ann, BaseModel) else None
            if field is None:
                return None
            ann = field.annotation
        raw = raw[part] if isinstance(raw, dict | list | tuple) else None
    return _unwrap(ann)


def _refuse_non_finite(raw: dict[str, Any], where: str) -> None:
    """inf and NaN are no setting's value: one line naming the field and what to write instead."""
    found = _non_finite(raw)
    if found is None:
        return
    loc, value = found
    kind = _field_type(raw, loc)
    kind = _unwrap(get_args(kind)[0]) if _is_sequence_type(kind) and get_args(kind) else kind
    write = {int: "a whole number (an integer)", float: "a finite decimal number"}.get(kind, "a finite number")
    name = ".".join(str(p) for p in loc) or "(top level)"
    raise ConfigError(f"{where}: {name}: {value} is not a finite number; write {write} in its place")


def parse_config(raw: dict[str, Any], where: str = "config") -> RunConfig:
    """Build a RunConfig, turning pydantic's errors into one ConfigError line naming the field."""
    _refuse_non_finite(raw, where)
    try:
        return RunConfig.model_validate(raw)
    except ValidationError as err:
        raise ConfigError(_format_validation(err, where)) from err


def read_yaml(path: Path) -> dict[str, Any]:
    if not path.is_file():
        raise ConfigError(f"config file {str(path)!r} does not exist; pass an existing YAML file to --config")
    try:
        raw = yaml.safe_load(path.read_text(encoding="utf-8"))
    except RecursionError as err:
        raise ConfigError(f"config file {str(path)!r} nests lists or mappings too deeply; write it flatter") from err
    except (yaml.YAMLError, UnicodeDecodeError) as err:
        where = getattr(err, "problem_mark", None)
        at = f" at line {where.line + 1}, column {where.column + 1}" if where is not None else ""
        problem = getattr(err, "problem", None) or str(err).splitlines()[0]
        raise ConfigError(f"config file {str(path)!r} is not valid YAML{at}: {problem}") from err
    if raw is None:
        return {}
    if not isinstance(raw, dict):
        raise ConfigError(f"config file {str(path)!r} must hold a mapping at the top, got {type(raw).__name__}")
    why = _too_big(raw)
    if why:
        raise ConfigError(f"config file {str(path)!r} {why}; write the values out without aliases (&name / *name)")
    return raw


def config_hash(cfg: RunConfig) -> str:
    """The resolved config's identity: `config_key` of its JSON, the data file's path left out (where the
    data lies is not what it is). A checked-in results file records it, so a test can tell that the
    file was made by the preset it describes (tests/test_results_files.py)."""
    return config_key(cfg.model_dump(mode="json", exclude={"data": {"path"}}))


def preset_names() -> list[str]:
    return sorted(p.name.removesuffix(".yaml") for p in resources.files("modelshrink.presets").iterdir()
                  if p.name.endswith(".yaml"))  # fmt: skip


def read_preset(name: str) -> dict[str, Any]:
    names = preset_names()
    if name not in names:
        raise UnknownNameError(f"unknown preset {name!r}; known: {', '.join(names)}")
    text = resources.files("modelshrink.presets").joinpath(f"{name}.yaml").read_text(encoding="utf-8")
    return yaml.safe_load(text) or {}


def merge(base: dict[str, Any], override: dict[str, Any]) -> dict[str, Any]:
    """Deep-merge `override` into `base` (mappings merge, everything else replaces)."""
    out = dict(base)
    for key, value in override.items():
        if isinstance(out.get(key), dict):
            if not isinstance(value, dict):  # `train: 5` or a bare `train:` must not erase the section
                raise ConfigError(f"{key}: must be a mapping of settings, got {value!r}")
            out[key] = merge(out[key], value)
        else:
            out[key] = value
    return out


@dataclass(frozen=True)
class Overrides:
    """What command-line flags set on top of a preset and a YAML file (None: not given)."""

    data_path: str | None = None
    task: str | None = None
    text_column: str | None = None
    label_column: str | None = None
    stratify: bool = False
    subsample: int | None = None
    epochs: int | None = None
    seeds: Sequence[int] | None = None
    model: str | None = None  # a built-in model's name, or path/to/file.py:function
    baseline_only: bool = False  # `modelshrink train`: the baseline variant alone
    weights: str | None = None  # the user's trained weights for the model (models/checkpoint.py)
    device: str | None = None  # where training runs: auto | cpu | cuda | mps


def resolve(preset: str, file: Path | None = None, overrides: Overrides = Overrides()) -> tuple[RunConfig, str | None]:
    """The run's config: the preset, then the YAML file's keys, then the flags. Returns it and a
    note to show the user when the model was swapped for one that reads the task's input."""
    raw, where = read_preset(preset), f"preset {preset!r}"
    file_raw = read_yaml(file) if file is not None else {}
    if file is not None:
        try:
            raw, where = merge(raw, file_raw), str(file)
        except ConfigError as err:
            raise ConfigError(f"{file}: {err}") from err
    o = overrides
    data = {k: v for k, v in (("path", o.data_path), ("task", o.task), ("text_column", o.text_column),
                              ("label_column", o.label_column), ("subsample", o.subsample)) if v is not None}  # fmt: skip
    if o.stratify:
        data["stratify"] = True
    train = {k: v for k, v in (("epochs", o.epochs), ("device", o.device)) if v is not None}
    flags: dict[str, Any] = {"data": data, "train": train}
    if o.seeds:
        flags["seeds"] = list(o.seeds)
    raw = merge(raw, {k: v for k, v in flags.items() if v != {}})
    if o.baseline_only:
        raw["variants"] = [{"name": "baseline", "steps": []}]
    cfg, note = _choose_model(parse_config(raw, where), o.model, o.task, "model" in file_raw)
    if o.weights is not None:  # after --model, which replaces the model section
        model = {**cfg.model.model_dump(mode="json"), "weights": o.weights}
        cfg = parse_config({**cfg.model_dump(mode="json"), "model": model}, "--weights")
    return cfg, note


def _choose_model(cfg: RunConfig, model: str | None, task: str | None, named: bool) -> tuple[RunConfig, str | None]:
    """Apply --model; with --task alone, swap a preset's model that cannot read the task's input.

    `--task digits --preset seed`: the seed preset's LSTM reads token ids, digits are images,
    so the run uses the task kind's default model (cnn-small) and says so. A model the user
    named (--model, or a `model:` section in the YAML file: `named`) is never swapped; a mismatch is an error.
    """
    raw, note = cfg.model_dump(mode="json"), None
    if model is not None:
        if model.startswith("hf:"):  # a transformers folder (or ORG/NAME on the Hub): models/hf.py
            if not model[3:]:
                raise ConfigError("--model hf: needs a folder, e.g. --model hf:path/to/model")
            raw["model"] = {"name": "hf", "path": model[3:]}
        elif ":" in model or model.endswith(".py"):
            raw["model"] = {"name": "custom", "build": model}
        elif model in MODELS and model != "custom":
            raw["model"] = {"name": model}
        else:
            known = ", ".join(n for n in MODELS.names() if n != "custom")
            raise ConfigError(
                f"--model {model!r} is neither a built-in model ({known}) nor path/to/file.py:function nor hf:FOLDER"
            )
    elif task is not None and not named:
        kind, reads = TASK_INPUT.get(task), MODEL_INPUT.get(cfg.model.name)
        if kind is not None and reads is not None and kind != reads:
            raw["model"] = dict(DEFAULT_MODEL[kind])
            note = (f"task {task!r} gives {kind}s; the preset's model {cfg.model.name!r} reads {reads}, "
                    f"so this run uses model {raw['model']} (choose one with --model)")  # fmt: skip
    return (parse_config(raw, "--model") if raw != cfg.model_dump(mode="json") else cfg), note


def run_config_schema() -> dict[str, Any]:
    """The JSON Schema of a run config file (`modelshrink schema`), for editors to complete and check YAML.

    A step is one of the registered techniques' configs, chosen by `kind`; a step's setting may also be a list
    of values (a grid, expanded into variants by `expand_variant`)."""
    schema = RunConfig.model_json_schema(ref_template="#/$defs/{model}")
    defs = schema.setdefault("$defs", {})
    refs = {}
    for kind in sorted(TECHNIQUES):
        cls = TECHNIQUES[kind].config_cls
        sub = cls.model_json_schema(ref_template="#/$defs/{model}")
        defs.update(sub.pop("$defs", {}))
        for key, prop in sub.get("properties", {}).items():
            if key != "kind":  # a grid: the setting's type, or a list of it
                sub["properties"][key] = {"anyOf": [prop, {"type": "array", "items": prop}], **_doc(prop)}
        defs[cls.__name__] = sub
        refs[kind] = f"#/$defs/{cls.__name__}"
    defs["TechniqueConfig"] = {"oneOf": [{"$ref": r} for r in refs.values()],
                               "discriminator": {"propertyName": "kind", "mapping": refs}}  # fmt: skip
    return {**schema, "$schema": "https://json-schema.org/draft/2020-12/schema", "title": "modelshrink run config"}


def _doc(prop: dict[str, Any]) -> dict[str, Any]:
    return {k: prop[k] for k in ("title", "description", "default") if k in prop}
