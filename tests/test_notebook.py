"""analysis/notebooks/regret_curves.ipynb: committed without outputs, and run end to end on a real (tiny) sweep."""

from __future__ import annotations

from pathlib import Path

import nbformat
import pytest
from nbclient import NotebookClient
from nbclient.exceptions import CellExecutionError

from analysis.sweep import run_sweep

ROOT = Path(__file__).resolve().parent.parent
NOTEBOOK = ROOT / "analysis" / "notebooks" / "regret_curves.ipynb"
FIGURE_CELLS = {"regret", "theorem1", "recovery", "matrices", "allocation"}  # the ids of the cells that draw


@pytest.fixture(scope="module")
def results(tmp_path_factory, tiny_sweep) -> Path:
    """A real results directory of `nsr sweep` on the SYNTHETIC scenario: 4 strata x 3 agents x 2 seeds."""
    out = tmp_path_factory.mktemp("sweep")
    config = out / "config.yaml"
    config.write_text(tiny_sweep)
    with pytest.MonkeyPatch.context() as patch:
        patch.setenv("NSR_CACHE", str(out / "cache"))  # the calibrated a* go here, not into the user's cache
        run_sweep(config, out / "results", progress=False)
    return out / "results"


def execute(results: Path, monkeypatch: pytest.MonkeyPatch) -> nbformat.NotebookNode:
    """The notebook run from the repository root on ``results``; a cell that raises raises CellExecutionError."""
    monkeypatch.setenv("NSR_RESULTS", str(results))  # the kernel inherits this process's environment
    notebook = nbformat.read(NOTEBOOK, as_version=4)
    client = NotebookClient(notebook, kernel_name="python3", timeout=120, resources={"metadata": {"path": str(ROOT)}})
    client.execute()
    return notebook


def outputs(notebook: nbformat.NotebookNode, cell_id: str) -> list:
    return next(cell.outputs for cell in notebook.cells if cell.get("id") == cell_id)


def text(notebook: nbformat.NotebookNode, cell_id: str) -> str:
    return "".join(o.get("text", "") + o.get("data", {}).get("text/plain", "") for o in outputs(notebook, cell_id))


def test_the_committed_notebook_is_nbformat_4_without_outputs():
    notebook = nbformat.read(NOTEBOOK, as_version=nbformat.NO_CONVERT)
    nbformat.validate(notebook)
    assert notebook.nbformat == 4
    assert notebook.metadata.kernelspec.name == "python3"
    first = notebook.cells[0]
    assert first.cell_type == "code" and first.metadata.get("tags") == ["parameters"]
    assert 'RESULTS = "results/quick"' in first.source.splitlines()
    code = [cell for cell in notebook.cells if cell.cell_type == "code"]
    assert all(cell.outputs == [] and cell.execution_count is None for cell in code)
    assert {cell.id for cell in code} >= FIGURE_CELLS
    assert all("_figure(" in cell.source for cell in code if cell.id in FIGURE_CELLS)  # analysis.figures draws them
    assert not [word for word in ("pyplot", "plt.", "subplots", "savefig") if word in "".join(c.source for c in code)]


def test_the_notebook_draws_every_figure_of_a_real_sweep(results, monkeypatch):
    notebook = execute(results, monkeypatch)
    cells = [cell for cell in notebook.cells if cell.cell_type == "code"]
    assert not [o for cell in cells for o in cell.outputs if o.output_type == "error"]
    images = [
        cell.id
        for cell in cells
        for o in cell.outputs
        if o.output_type == "display_data" and "image/png" in o.get("data", {})
    ]
    assert len(images) >= 4
    assert sorted(images) == sorted(FIGURE_CELLS)  # one figure per figure cell: the tiny sweep supports all five
    assert str(results) in text(notebook, "setup")  # NSR_RESULTS, not the default results/quick
    assert all(agent in text(notebook, "metrics") for agent in ("similarity", "fresh", "oracle"))
    assert "IQM [95% CI]" in text(notebook, "metrics")
    assert "delta_switch" in text(notebook, "theorem1")
    assert "bank cuts cyclic recovery time" in text(notebook, "paper")


def test_a_cell_that_raises_fails_the_run_with_its_message(tmp_path, monkeypatch):
    with pytest.raises(CellExecutionError, match="does not exist"):
        execute(tmp_path / "no-such-results", monkeypatch)
