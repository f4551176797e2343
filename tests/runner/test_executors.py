"""Local processes give the same numbers as in-process: workers train (sharing prefixes), the driver measures."""

from pathlib import Path
from types import SimpleNamespace

import pytest

from modelshrink.config import parse_config
from modelshrink.errors import ConfigError
from modelshrink.runner.executors import Executor, ProcessExecutor, make_executor, threads_per_worker
from modelshrink.runner.run import Runner


def test_processes_equal_in_process(sweep: SimpleNamespace, tmp_path: Path) -> None:
    cfg = parse_config(sweep.config(tmp_path, variants=sweep.VARIANTS[:3], seeds=(0,)))  # lean: 3 rows
    quiet = lambda _m: None  # noqa: E731
    inproc = Runner(cfg, tmp_path / "a", log=quiet).run()
    with ProcessExecutor(2) as ex:
        procs = Runner(cfg, tmp_path / "b", log=quiet).run(executor=ex)
    assert len(procs) == 3 and all(r["status"] == "ok" for r in procs)
    assert {r["executor"] for r in procs} == {"processes"}
    assert sweep.table(procs) == sweep.table(inproc)
    by = {r["variant"]: r for r in procs}
    # pruned and pruned-int8 trained in one worker task: the same fine-tuning (its timing too), not two
    assert by["pruned-int8"]["steps"][0] == by["pruned"]["steps"][0]
    assert {r["train_threads"] for r in procs} == {min(2, threads_per_worker(2))}


def test_executor_flags() -> None:
    with pytest.raises(ConfigError, match="--jobs must be at least 1, got 0"):
        make_executor("inprocess", 0, None)
    with pytest.raises(ConfigError, match="--ray-address needs --executor ray"):
        make_executor("inprocess", None, "local")
    with pytest.raises(ConfigError, match="unknown --executor 'dask'"):
        make_executor("dask", None, None)
    assert type(make_executor("inprocess", None, None)) is Executor
    assert isinstance(make_executor("inprocess", 2, None), ProcessExecutor)
    assert threads_per_worker(10**6) == 1


def test_rows_sharing_a_first_step_train_in_one_task() -> None:
    from modelshrink.config import VariantConfig
    from modelshrink.runner.executors import prefix_groups

    prune = {"kind": "prune.magnitude", "final_sparsity": 0.5, "begin_step": 0, "end_step": 10, "epochs": 1}
    v = {n: VariantConfig.model_validate({"name": n, "steps": steps}) for n, steps in {
        "baseline": [], "int8": [{"kind": "quant.int8_dynamic"}], "pruned": [prune],
        "pruned-int8": [prune, {"kind": "quant.int8_dynamic"}], "other": [{**prune, "final_sparsity": 0.7}]}.items()}  # fmt: skip
    tasks = [(v[n], s) for s in (0, 1) for n in v]
    names = [[f"{tasks[i][0].name}/{tasks[i][1]}" for i in g] for g in prefix_groups(tasks)]
    assert names == [["baseline/0"], ["int8/0"], ["pruned/0", "pruned-int8/0"], ["other/0"],
                     ["baseline/1"], ["int8/1"], ["pruned/1", "pruned-int8/1"], ["other/1"]]  # fmt: skip


@pytest.mark.parametrize("kind", ["custom", "hf"])
def test_processes_run_a_users_own_model(sweep: SimpleNamespace, tmp_path: Path, kind: str) -> None:
    # The workers train the user's model (file.py or hf folder) and evaluate its files; the driver times them.
    base = sweep.config(tmp_path, variants=[{"name": "baseline", "steps": []}, sweep.VARIANTS[1]], seeds=(0,))
    cfg = parse_config({**base, "model": sweep.user_model(tmp_path / "mine", kind)})
    logged: list[str] = []
    inproc = Runner(cfg, tmp_path / "a", log=lambda _m: None).run()
    with ProcessExecutor(2) as ex:
        procs = Runner(cfg, tmp_path / "b", log=logged.append).run(executor=ex)
    assert all(r["status"] == "ok" for r in procs), [r.get("error") for r in procs]
    assert sweep.table(procs) == sweep.table(inproc)
    assert any(m.startswith("pruned seed 0: trained and evaluated in") for m in logged)  # in a worker ...
    assert not any("could not come back" in m for m in logged), logged  # ... and not trained again here


def test_rows_timed_together_still_fail_alone(sweep: SimpleNamespace, tmp_path: Path) -> None:
    # The driver times a seed's evaluated rows together (RowRunner.finish_many); a row whose file is gone fails,
    # the others are timed and kept.
    from modelshrink.runner.task import RowRunner

    variants = [{"name": "baseline", "steps": []}, {"name": "int8", "steps": [{"kind": "quant.int8_dynamic"}]}]
    cfg = parse_config(sweep.config(tmp_path, variants=variants, seeds=(0,)))
    data = Runner(cfg, tmp_path / "o").prepare()
    rows = RowRunner(cfg, tmp_path / "o", log=lambda _m: None)
    cache = {("baseline",): rows.baseline(data, 0)}
    evs = []
    for v in cfg.variants:
        _, stage = rows.stage(data, v, 0, cache)
        status, out = rows.evaluate(data, v, 0, cache, stage)
        assert status == "evaluated"
        evs.append(out["evaluated"])
    assert all(not a.latency for ev in evs for a in ev.untimed.row.artifacts)  # evaluated, not timed yet
    together = rows.finish_many(data, evs)
    assert [s for s, _ in together] == ["ok", "ok"] and all(r["latency"] for _, r in together)
    compact = next(a for a in evs[1].untimed.row.artifacts if a.artifact == "compact")
    (tmp_path / "o" / compact.file).unlink()
    for ev in evs:  # timed again from scratch: nothing cached in this process
        for a in ev.untimed.row.artifacts:
            a.latency, a.memory = [], None
    rows.cache = type(rows.cache)()
    alone = rows.finish_many(data, evs)
    assert [s for s, _ in alone] == ["ok", "failed"]
    assert alone[0][1]["latency"] and "weights.msz" in alone[1][1]["error"]
