"""`modelshrink schema`: the JSON Schema of a run config accepts every preset and rejects misspelt keys."""

import json

import pytest

from modelshrink.cli import main
from modelshrink.config import preset_names, read_preset, run_config_schema

jsonschema = pytest.importorskip("jsonschema")


@pytest.fixture(scope="module")
def validator() -> "jsonschema.protocols.Validator":
    schema = run_config_schema()
    cls = jsonschema.validators.validator_for(schema)
    cls.check_schema(schema)
    return cls(schema)


@pytest.mark.parametrize("name", preset_names())
def test_every_preset_is_valid(validator, name: str) -> None:
    assert list(validator.iter_errors(read_preset(name))) == []


@pytest.mark.parametrize(
    "bad",
    [
        {"seeds": [0], "trian": {"epochs": 1}},  # misspelt section
        {"variants": [{"name": "p", "steps": [{"kind": "prune.magnitude", "sparsty": 0.5}]}]},  # misspelt setting
        {"variants": [{"name": "p", "steps": [{"kind": "prune.nope"}]}]},  # unknown technique
    ],
)
def test_misspelt_keys_fail(validator, bad: dict) -> None:
    assert list(validator.iter_errors(bad))


def test_a_grid_of_values_is_valid(validator) -> None:
    grid = {"variants": [{"name": "p", "steps": [{"kind": "prune.magnitude", "final_sparsity": [0.5, 0.7]}]}]}
    assert list(validator.iter_errors(grid)) == []


def test_schema_command_prints_it(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["schema"]) == 0
    assert json.loads(capsys.readouterr().out)["title"] == "modelshrink run config"
