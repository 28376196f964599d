"""The README's library example runs as written (at a smaller width, to stay fast)."""
import os
import re


def test_readme_example_runs(capsys):
    root = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
    text = open(os.path.join(root, "README.md")).read()
    code = re.search(r"```python\n(.*?)```", text, re.S).group(1)
    assert "width=4096" in code
    exec(compile(code.replace("width=4096", "width=256"), "README.md", "exec"), {})
    out = capsys.readouterr().out
    assert "kfac  alpha measured 81  predicted 81" in out
    assert "step" in out and "pred inf" in out
