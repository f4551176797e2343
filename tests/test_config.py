import pytest

from modelshrink.config import RunConfig, VariantConfig, parse_config, preset_names, read_preset
from modelshrink.errors import ConfigError
from modelshrink.runner.store import config_key


def test_presets_parse() -> None:
    assert {"seed", "quick"} <= set(preset_names())
    for name in preset_names():
        parse_config(read_preset(name), name)


def test_seed_preset_is_the_thesis_comparison() -> None:
    cfg = parse_config(read_preset("seed"))
    assert [v.name for v in cfg.variants] == [
        "baseline", "pruned", "clustered", "baseline-int8", "pruned-int8", "clustered-int8",
    ]  # fmt: skip
    prune = cfg.variants[1].steps[0]
    assert prune.model_dump(include={"final_sparsity", "begin_step", "end_step", "schedule"}) == {
        "final_sparsity": 0.5, "begin_step": 2000, "end_step": 10000, "schedule": "polynomial",
    }  # fmt: skip
    assert cfg.variants[2].steps[0].model_dump(include={"clusters", "init"}) == {"clusters": 16, "init": "kmeans++"}
    assert cfg.model.embed_dim == 32 and cfg.model.hidden == 64 and cfg.data.vocab_size == 10_000
    assert cfg.data.max_len == 66 and cfg.train.batch_size == 32 and cfg.train.epochs == 50


def test_step_parameters_reach_the_dump_and_the_key() -> None:
    a = VariantConfig(name="p", steps=[{"kind": "prune.magnitude", "final_sparsity": 0.5}])
    b = VariantConfig(name="p", steps=[{"kind": "prune.magnitude", "final_sparsity": 0.7}])
    assert a.model_dump(mode="json")["steps"][0]["final_sparsity"] == 0.5
    assert config_key(a.model_dump(mode="json")) != config_key(b.model_dump(mode="json"))
    cfg = RunConfig(variants=(a,))
    assert RunConfig.model_validate_json(cfg.model_dump_json()) == cfg


def test_duplicate_variant_names() -> None:
    with pytest.raises(ConfigError, match="repeated: a"):
        parse_config({"variants": [{"name": "a"}, {"name": "a"}]})


def test_merge_refuses_to_replace_a_section_with_a_scalar() -> None:
    from modelshrink.config import merge

    assert merge({"train": {"epochs": 3, "lr": 0.1}}, {"train": {"epochs": 5}}) == {"train": {"epochs": 5, "lr": 0.1}}
    with pytest.raises(ConfigError, match="train: must be a mapping"):
        merge({"train": {"epochs": 3}}, {"train": None})
