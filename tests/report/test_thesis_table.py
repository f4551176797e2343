"""summary.md prints the thesis's reference table under the emotion task only."""

import numpy as np
import pytest

from modelshrink.report.synthetic import synthetic_row
from modelshrink.report.tables import summary_markdown


@pytest.mark.parametrize(("task", "shown"), [("emotion", True), ("csv", False), ("digits", False)])
def test_thesis_table_only_for_the_emotion_task(task: str, shown: bool) -> None:
    row = {**synthetic_row("baseline", 0, [], np.random.default_rng(0)), "variant": "baseline", "seed": 0,
           "status": "ok", "key": "k", "superseded": False, "config": {"data": {"task": task}}}  # fmt: skip
    assert ("The thesis's table, for reference" in summary_markdown([row])) is shown
