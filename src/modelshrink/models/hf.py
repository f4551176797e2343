"""A Hugging Face transformers folder as the baseline: `--model hf:PATH`.

The folder holds config.json, model.safetensors and tokenizer.json (a fast tokenizer). Anything
`AutoModelForSequenceClassification` loads works: a sequence-classification folder keeps its head
when its `id2label` names cover the data's labels (the baseline is then measured as it is); an
encoder-only folder (e.g. sentence-transformers) or a head for other labels gets a new head for the
data's labels and the baseline is fine-tuned. Nothing from the folder runs as code:
`trust_remote_code` stays off and pickled weights (pytorch_model.bin) are refused.

`HFClassifier` wraps the model so it reads one tensor of pre-padded token ids like every built-in
text model: it moves each row's tokens to the front (post-padding, so [CLS] sits at position 0 and
position ids count from 0 as the model was trained), builds the attention mask from the padding,
and returns the logits. Training batches, evaluation, latency, the techniques and the one-input
ONNX export (dynamic batch and sequence axes) then work unchanged.

transformers is imported inside the functions: `import modelshrink` stays light.
"""

from __future__ import annotations

import copy
import hashlib
import json
import logging
from functools import lru_cache
from pathlib import Path
from typing import Any

import torch
from torch import nn

from modelshrink.data.hf_text import HFTextEncoder, tokenizer_pad_id
from modelshrink.errors import ConfigError, IncompatibleModelError
from modelshrink.models.hf_lowrank import apply_factored_shapes, keep_layer_ranks
from modelshrink.models.hf_prune import HEADS_KEY, apply_saved_shapes

log = logging.getLogger(__name__)

PREFIX = "hf:"
DEFAULT_MAX_LEN = 128
# Families whose position ids start after the padding id (RoBERTa's `create_position_ids_from_input_ids`):
# their usable length is max_position_embeddings - (pad_token_id + 1).
_OFFSET_POSITIONS = {
    "roberta",
    "xlm-roberta",
    "camembert",
    "data2vec-text",
    "longformer",
    "xmod",
    "roberta-prelayernorm",
}
_HUB_FILES = ["config.json", "*.safetensors", "*.safetensors.index.json", "tokenizer.json", "tokenizer_config.json"]


def _quiet() -> None:
    """transformers' progress bars and 'newly initialized' warnings: the run logs what matters itself."""
    import transformers

    transformers.utils.logging.set_verbosity_error()
    transformers.utils.logging.disable_progress_bar()


# -- the folder -------------------------------------------------------------------------------------
@lru_cache(maxsize=8)
def resolve_folder(ref: str) -> Path:
    """A local folder, or ORG/NAME through the Hugging Face Hub cache (needs a network the first time)."""
    path = Path(ref).expanduser()
    if path.is_dir():
        return path.resolve()
    looks_hub = ref.count("/") == 1 and not ref.startswith((".", "/", "~")) and not path.suffix
    if not looks_hub:
        raise ConfigError(f"--model hf:{ref}: no such folder; pass a folder holding config.json, "
                          "model.safetensors and tokenizer.json (or hf:ORG/NAME from the Hub)")  # fmt: skip
    try:
        from huggingface_hub import snapshot_download

        return Path(snapshot_download(ref, allow_patterns=_HUB_FILES))
    except Exception as err:  # noqa: BLE001 - no package, no network, no such repo: the same advice
        first = str(err).splitlines()[0] if str(err) else type(err).__name__
        raise ConfigError(
            f"--model hf:{ref}: cannot fetch it from the Hugging Face Hub ({first[:160]}); without a network, "
            f"download it elsewhere (model.save_pretrained + tokenizer.save_pretrained) and pass hf:path/to/folder"
        ) from err


def read_folder_config(folder: Path) -> dict[str, Any]:
    """config.json, checked for what modelshrink refuses: remote code, pickled weights, no fast tokenizer."""
    config_file = folder / "config.json"
    if not config_file.is_file():
        raise ConfigError(f"--model hf:{folder}: no config.json; save the model with model.save_pretrained(folder)")
    try:
        config: dict[str, Any] = json.loads(config_file.read_text(encoding="utf-8"))
    except (json.JSONDecodeError, UnicodeDecodeError) as err:
        raise ConfigError(f"--model hf:{folder}: config.json is not valid JSON ({err})") from err
    if config.get("auto_map"):
        raise ConfigError(
            f"--model hf:{folder}: config.json asks for remote code (auto_map: {sorted(config['auto_map'])}); "
            "modelshrink never runs code from a model folder (trust_remote_code stays off): use a model whose "
            "architecture ships with transformers"
        )
    if not any(folder.glob("*.safetensors")):
        bins = [p.name for p in folder.glob("*.bin")]
        hint = f" ({', '.join(bins)} is pickle, never loaded)" if bins else ""
        raise ConfigError(f"--model hf:{folder}: no model.safetensors{hint}; re-save with "
                          "model.save_pretrained(folder) (safetensors is its default)")  # fmt: skip
    if not (folder / "tokenizer.json").is_file():
        raise ConfigError(f"--model hf:{folder}: no tokenizer.json; save the model's fast tokenizer into it "
                          "(AutoTokenizer.from_pretrained(..., use_fast=True).save_pretrained(folder))")  # fmt: skip
    return config


def _auto_config(folder: Path | None, config: dict[str, Any]) -> Any:
    from transformers import AutoConfig

    _quiet()
    model_type = config.get("model_type")
    try:
        if folder is not None:
            return AutoConfig.from_pretrained(str(folder), trust_remote_code=False)
        return AutoConfig.for_model(**config)
    except (ValueError, KeyError) as err:
        raise ConfigError(f"--model hf: unknown architecture (model_type {model_type!r}) for this transformers; "
                          "upgrade transformers or use a supported model") from err  # fmt: skip


def usable_positions(hf_config: Any) -> int:
    """The longest sequence the model's position embeddings cover."""
    positions = int(getattr(hf_config, "max_position_embeddings", 0) or 10**9)
    if getattr(hf_config, "model_type", "") in _OFFSET_POSITIONS:
        positions -= int(hf_config.pad_token_id or 0) + 1
    return positions


def has_trained_head(hf_config: Any) -> bool:
    return any(a.endswith("ForSequenceClassification") for a in (hf_config.architectures or []))


def head_labels(hf_config: Any) -> list[str] | None:
    """The head's label names in output order, or None when the folder has no classification head."""
    if not has_trained_head(hf_config):
        return None
    return [str(hf_config.id2label[i]) for i in range(hf_config.num_labels)]


@lru_cache(maxsize=8)
def folder_sha256(folder: Path) -> str:
    """SHA-256 over the folder's files (names and contents): a changed checkpoint is a new experiment."""
    digest = hashlib.sha256()
    for path in sorted(p for p in folder.rglob("*") if p.is_file() and ".cache" not in p.parts):
        digest.update(str(path.relative_to(folder)).encode() + b"\0")
        with path.open("rb") as f:
            for chunk in iter(lambda: f.read(1 << 20), b""):
                digest.update(chunk)
    return digest.hexdigest()


def text_encoder(ref: str, max_len: int | None) -> HFTextEncoder:
    """The folder's own tokenizer, truncating at `max_len` (default min(128, the model's positions))."""
    folder = resolve_folder(ref)
    hf_config = _auto_config(folder, read_folder_config(folder))
    positions = usable_positions(hf_config)
    if max_len is not None and max_len > positions:
        raise ConfigError(f"model.max_len {max_len} is beyond the model's {positions} position embeddings; "
                          f"set max_len to at most {positions}")  # fmt: skip
    tokenizer_json = (folder / "tokenizer.json").read_text(encoding="utf-8")
    pad = hf_config.pad_token_id if hf_config.pad_token_id is not None else tokenizer_pad_id(tokenizer_json)
    return HFTextEncoder(tokenizer_json, max_len or min(DEFAULT_MAX_LEN, positions), int(pad or 0),
                         head_labels(hf_config), int(hf_config.vocab_size))  # fmt: skip


# -- the model --------------------------------------------------------------------------------------
class HFClassifier(nn.Module):
    """(B, T) int64 ids pre-padded with 0 → (B, labels) logits of a transformers sequence classifier."""

    def __init__(self, model: nn.Module, pad_id: int) -> None:
        super().__init__()
        self.model = model
        self.pad_id = pad_id

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        t = x.shape[1]
        real = x != 0  # (B, T): padding is 0 in the rows (data/hf_text.py)
        # Move each row's tokens to the front: output column j reads input column (j + pads) mod T.
        pads = t - real.sum(dim=1, keepdim=True)  # (B, 1)
        index = (torch.arange(t, device=x.device).unsqueeze(0) + pads) % t  # (B, T)
        x, real = torch.gather(x, 1, index), torch.gather(real, 1, index)
        if self.pad_id:  # rows hold pad_id and 0 swapped (data/hf_text.py); swap them back
            x = torch.where(x == 0, self.pad_id, torch.where(x == self.pad_id, 0, x))
        return self.model(input_ids=x, attention_mask=real.long()).logits  # (B, labels)

    def new_head(self, labels: list[str]) -> None:
        """A freshly initialised classification head for `labels` (the folder's was for other labels)."""
        config = self.model.config
        if config.num_labels != len(labels):
            raise ConfigError(f"the head has {config.num_labels} outputs, the data {len(labels)} labels")
        std = float(getattr(config, "initializer_range", 0.02))
        for name, child in self.model.named_children():
            if name == self.model.base_model_prefix:
                continue
            for module in child.modules():  # transformers' own init (normal, std=initializer_range)
                if isinstance(module, nn.Linear):  # `_init_weights` skips modules it has initialised once
                    nn.init.normal_(module.weight, std=std)
                    if module.bias is not None:
                        nn.init.zeros_(module.bias)
        config.id2label = dict(enumerate(labels))
        config.label2id = {name: i for i, name in enumerate(labels)}
        config.architectures = [type(self.model).__name__]

    def config_dict(self) -> dict[str, Any]:
        """The HF config as JSON (pruned heads, label names included): rebuilds the model with no folder."""
        return dict(json.loads(self.model.config.to_json_string()))


def build_hf(ref: str | None, hf_config: dict[str, Any] | None, num_labels: int) -> HFClassifier:
    """From a saved config (a compact file: weights come after) or from the folder (its weights)."""
    from transformers import AutoModelForSequenceClassification

    _quiet()
    if hf_config is not None:
        config = _auto_config(None, hf_config)
        config.num_labels = num_labels
        model = AutoModelForSequenceClassification.from_config(config, attn_implementation="eager")
        apply_saved_shapes(model)  # a structurally pruned model (prune.transformer): its heads per layer
        apply_factored_shapes(model)  # a low-rank model (lowrank): its factored layers, at their ranks
        return HFClassifier(model, int(config.pad_token_id or 0))
    if ref is None:
        raise ConfigError("model 'hf' needs `path` (--model hf:PATH)")
    folder = resolve_folder(ref)
    config = _auto_config(folder, read_folder_config(folder))
    pad = text_encoder(ref, None).pad_id
    keep = has_trained_head(config) and config.num_labels == num_labels
    try:
        model = AutoModelForSequenceClassification.from_pretrained(
            str(folder), num_labels=num_labels, ignore_mismatched_sizes=not keep, attn_implementation="eager",
            trust_remote_code=False, use_safetensors=True,
        )  # fmt: skip
    except (OSError, ValueError, KeyError) as err:
        raise ConfigError(f"--model hf:{ref}: transformers cannot load it as a sequence classifier "
                          f"({type(err).__name__}: {str(err).splitlines()[0][:200]})") from err  # fmt: skip
    model.config.pad_token_id = pad
    return HFClassifier(model, pad)


def is_pretrained(ref: str, labels: list[str]) -> bool:
    """True when the folder's trained head is for exactly these labels, in this order."""
    folder = resolve_folder(ref)
    return head_labels(_auto_config(folder, read_folder_config(folder))) == list(labels)


# -- a smaller transformer from a larger one (distillation's student) ---------------------------------
def _layer_list(model: nn.Module, count: int) -> str:
    """The qualified name of the encoder's `count` layers (bert.encoder.layer, distilbert.transformer.layer, ...)."""
    found = [name for name, m in model.named_modules() if isinstance(m, nn.ModuleList) and len(m) == count]
    if len(found) != 1:
        raise ConfigError(f"{type(model).__name__}: cannot tell its encoder layers apart (module lists of length "
                          f"{count}: {found or 'none'}); distill it into a built-in student instead")  # fmt: skip
    return found[0]


def fewer_layers(teacher: HFClassifier, layers: int) -> tuple[HFClassifier, list[int]]:
    """A copy of `teacher` with `layers` encoder layers, as DistilBERT was made (Sanh et al. 2019): one
    teacher layer out of every L/layers (0, 2, 4, ... for half), embeddings, pooler and head copied.
    Returns the student and the teacher layers it starts from."""
    config = copy.deepcopy(teacher.model.config)
    total = int(config.num_hidden_layers)
    if total < 2:
        raise IncompatibleModelError(f"distill.kd: this hf model ({config.model_type}) has {total} encoder layer, so "
                                     "no student with fewer layers; name a built-in student ({name: bilstm, ...})")  # fmt: skip
    if not 1 <= layers < total:
        raise ConfigError(f"distill.kd: student layers {layers} must be fewer than the teacher's {total} "
                          f"(1 to {total - 1})")  # fmt: skip
    keep = [i * total // layers for i in range(layers)]
    config.num_hidden_layers = layers  # the standard name; a family's own (n_layers) follows its attribute_map
    heads = getattr(config, HEADS_KEY, None)
    if heads:  # a head-pruned teacher (prune.transformer): each kept layer keeps its head count
        setattr(config, HEADS_KEY, [heads[i] for i in keep])
    keep_layer_ranks(config, _layer_list(teacher.model, total) + ".", keep)  # a factored teacher (lowrank)
    student = build_hf(None, json.loads(config.to_json_string()), int(config.num_labels))
    prefix, s_prefix = _layer_list(teacher, total) + ".", _layer_list(student, layers) + "."
    if prefix != s_prefix:  # internal: the same architecture names its layers the same way
        raise ValueError(f"student layers at {s_prefix}, the teacher's at {prefix}")
    source = teacher.state_dict()
    state = {}
    for key in student.state_dict():
        index, _, rest = key[len(prefix) :].partition(".")
        state[key] = source[f"{prefix}{keep[int(index)]}.{rest}" if key.startswith(prefix) else key].clone()
    student.load_state_dict(state)
    return student, keep
