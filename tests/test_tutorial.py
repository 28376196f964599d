"""The tutorial notebook runs headless from top to bottom (nbclient), so it cannot rot."""
import os

import nbformat
from nbclient import NotebookClient

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def test_tutorial_notebook_executes():
    path = os.path.join(ROOT, "experiments", "tutorial.ipynb")
    nb = nbformat.read(path, as_version=4)
    env_path = os.environ.get("PYTHONPATH", "")
    os.environ["PYTHONPATH"] = ROOT + (os.pathsep + env_path if env_path else "")
    try:
        NotebookClient(nb, timeout=300, kernel_name="python3",
                       resources={"metadata": {"path": ROOT}}).execute()
    finally:
        os.environ["PYTHONPATH"] = env_path
    outputs = [o for cell in nb.cells if cell.cell_type == "code" for o in cell.outputs]
    assert not [o for o in outputs if o.output_type == "error"]
    assert not [o for o in outputs if o.get("name") == "stderr"]      # nothing but the output
    text = "".join(o.get("text", "") for o in outputs)
    assert "layers (1 2)(3)" in text and sum(o.output_type == "display_data" for o in outputs) >= 2
