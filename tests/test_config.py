import pytest

from modelshrink.config import RunConfig, VariantConfig, parse_config, preset_names, read_preset
from modelshrink.errors import ConfigError
from modelshrink.store import config_key


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


def test_parameter_lists_expand_into_one_variant_per_value() -> None:
    raw = {"variants": [{"name": "pruned", "steps": [
        {"kind": "prune.magnitude", "final_sparsity": [0.5, 0.7, 0.8, 0.9, 0.95], "epochs": 1}]}]}  # fmt: skip
    cfg = parse_config(raw)
    assert [v.name for v in cfg.variants] == [f"pruned[final_sparsity={s}]" for s in (0.5, 0.7, 0.8, 0.9, 0.95)]
    assert [v.steps[0].final_sparsity for v in cfg.variants] == [0.5, 0.7, 0.8, 0.9, 0.95]
    assert RunConfig.model_validate_json(cfg.model_dump_json()) == cfg  # expanded configs round-trip unchanged


def test_several_lists_give_their_product_and_shared_keys_name_the_step() -> None:
    raw = {"variants": [{"name": "pc", "steps": [
        {"kind": "prune.magnitude", "final_sparsity": [0.5, 0.8], "epochs": [1, 2]},
        {"kind": "cluster.kmeans", "clusters": [8, 16], "epochs": 3}]}]}  # fmt: skip
    names = [v.name for v in parse_config(raw).variants]
    assert len(names) == 8 and len(set(names)) == 8
    assert names[0] == "pc[final_sparsity=0.5,epochs=1,clusters=8]"
    raw["variants"][0]["steps"][1]["epochs"] = [3, 4]
    assert "pc[final_sparsity=0.5,prune.magnitude.epochs=1,clusters=8,cluster.kmeans.epochs=3]" in [
        v.name for v in parse_config(raw).variants
    ]


def test_bad_values_in_a_list_still_name_the_field() -> None:
    raw = {"variants": [{"name": "p", "steps": [{"kind": "prune.magnitude", "final_sparsity": [0.5, 1.5]}]}]}
    with pytest.raises(ConfigError, match=r"variant 'p\[final_sparsity=1.5\]': steps.0.final_sparsity: .*less than 1"):
        parse_config(raw)
    raw = {"variants": [{"name": "p", "steps": [{"kind": "prune.magnitude", "final_sparsity": []}]}]}
    with pytest.raises(ConfigError, match=r"steps.0.final_sparsity: an empty list"):
        parse_config(raw)
    raw = {"variants": [{"name": "p", "steps": [{"kind": "prune.magnitude", "final_sparsityy": [0.5]}]}]}
    with pytest.raises(ConfigError, match="unknown key"):
        parse_config(raw)
