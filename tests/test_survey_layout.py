"""The survey package's two rooms: the analysis never reaches into the study's storage, and the
ratings contract is defined in one module only."""

from __future__ import annotations

import ast
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
SURVEY = ROOT / "survey"


def imported_modules(path: Path) -> set[str]:
    """Every module a file imports, at its top or inside a function."""
    names = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            names.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.module:
            names.add(node.module)
            names.update(f"{node.module}.{alias.name}" for alias in node.names)
    return names


def test_no_analysis_module_imports_the_study_room() -> None:
    files = [*sorted((SURVEY / "analysis").glob("*.py")), SURVEY / "ratings.py"]
    assert len(files) >= 7
    for path in files:
        reaching = sorted(m for m in imported_modules(path)
                          if m.startswith(("survey.study", "sqlalchemy", "gradio", "tools")))
        assert not reaching, f"{path.relative_to(ROOT)} imports {reaching}"


def test_the_contract_imports_neither_room() -> None:
    reaching = [m for m in imported_modules(SURVEY / "ratings.py")
                if m.startswith(("survey.study", "survey.analysis"))]
    assert not reaching


def test_the_analysis_runs_without_loading_storage() -> None:
    """In a fresh interpreter: a report from a frame loads no database or web layer."""
    script = (
        "import sys\n"
        "from survey.ratings import validate\n"
        "from survey.analysis.report import analyse, report_markdown, figure_images\n"
        "from survey.analysis.simulate import simulate_study\n"
        "a = analyse(validate(simulate_study(n_raters=5, n_images=4, seed=1)), resamples=100)\n"
        "assert '## MOS per method' in report_markdown(a, command='x', figures=[])\n"
        "assert len(figure_images(a)) == 4\n"
        "print(sorted(m for m in sys.modules if m.startswith(('survey.study', 'sqlalchemy', 'gradio'))))\n"
    )
    run = subprocess.run([sys.executable, "-c", script], cwd=ROOT, capture_output=True, text=True,
                         timeout=120, env={"PATH": "/usr/bin:/bin", "MPLBACKEND": "Agg", "HOME": "/tmp"})
    assert run.returncode == 0, run.stderr
    assert run.stdout.strip() == "[]"


def test_the_load_test_lives_outside_the_package() -> None:
    assert not (SURVEY / "loadtest.py").exists() and (ROOT / "tools" / "loadtest.py").is_file()
    for path in SURVEY.rglob("*.py"):
        assert not any(m.startswith("tools") for m in imported_modules(path)), path


def test_the_contract_is_written_once() -> None:
    """Score labels, the column list, the first-showing filter and the ratings error class live
    in survey/ratings.py and nowhere else in the package."""
    contract = SURVEY / "ratings.py"
    for path in SURVEY.rglob("*.py"):
        if path == contract:
            continue
        text = path.read_text()
        where = path.relative_to(ROOT)
        assert '"Excellent"' not in text, f"{where} spells out the score labels"
        assert '"answered_at", "response_ms"' not in text, f"{where} lists the columns"
        assert '["repeat"] == 0' not in text and "repeat == 0" not in text, f"{where} filters first showings"
        tree = ast.parse(text)
        errors = [n.name for n in ast.walk(tree) if isinstance(n, ast.ClassDef) and "Ratings" in n.name]
        assert not errors, f"{where} defines {errors}"
