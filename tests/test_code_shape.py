"""Issue 12's shape of the code, kept: small exported cells with one definition each, no function over 80 lines."""
import statistics

from code_shape import exported_cells, long_functions


def test_no_function_over_80_lines():
    assert long_functions(80) == []


def test_exported_cells_hold_one_definition_and_stay_small():
    cells = exported_cells()
    assert len(cells) > 100
    assert [c for c in cells if c["defs"] > 1] == []  # a class keeps its methods; helpers get their own cells
    assert statistics.median(c["lines"] for c in cells) < 20
