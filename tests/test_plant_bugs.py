"""scripts/plant_bugs.py (the suite's mutation test, which CI does not run) kept current: every bug
it plants still names a line that is in its file exactly once."""

from __future__ import annotations

import importlib.util

from conftest import REPO


def test_every_planted_bug_names_a_line_of_todays_code():
    spec = importlib.util.spec_from_file_location("plant_bugs", REPO / "scripts" / "plant_bugs.py")
    plant_bugs = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(plant_bugs)
    assert len(plant_bugs.BUGS) >= 15
    assert [bug.name for bug in plant_bugs.BUGS if plant_bugs.stale(bug)] == []
    assert all(bug.old != bug.new and all((REPO / t.split("::")[0]).is_file() for t in bug.tests)
               for bug in plant_bugs.BUGS)
