"""The house: one package whose folders are the tiers, each importing only from itself and the tiers below.

Fast (reads source files; one subprocess). A new module in a new folder must be given a tier in TIERS.
"""

import ast
import importlib.metadata
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
PACKAGE = ROOT / "src" / "imdb_distilbert"
# Lowest first: a module may import its own tier and those before it, never one after it.
TIERS = ["base", "data", "inference", "training", "export", "serving", "spark", "colab"]
SCRIPTS = {"train.py", "predict.py", "export.py", "export_hf.py", "serve.py", "score_spark.py"}


def tier_of(module):
    """"imdb_distilbert.data.reading" -> "data"; the package's own modules (compat, errors, ...) -> "base"."""
    parts = module.split(".")
    return parts[1] if len(parts) > 2 or (len(parts) == 2 and (PACKAGE / parts[1]).is_dir()) else "base"


def modules():
    """{dotted name: path} of every module in the package."""
    found = {}
    for path in sorted(PACKAGE.rglob("*.py")):
        parts = path.relative_to(PACKAGE.parent).with_suffix("").parts
        found[".".join(parts[:-1] if parts[-1] == "__init__" else parts)] = path
    return found


def imports(path, known):
    """The package's modules that `path` imports (anywhere in it, at module level or inside functions)."""
    out = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.ImportFrom) and node.module and node.module.startswith("imdb_distilbert"):
            for alias in node.names:
                full = f"{node.module}.{alias.name}"
                out.add(full if full in known else node.module)
        elif isinstance(node, ast.Import):
            out |= {a.name for a in node.names if a.name.startswith("imdb_distilbert")}
    return out


def graph():
    known = modules()
    return {name: imports(path, known) - {name, "imdb_distilbert"} for name, path in known.items()}


def test_every_folder_says_its_one_concern():
    for folder in [PACKAGE, *(p for p in PACKAGE.iterdir() if p.is_dir() and p.name != "__pycache__")]:
        if not any(folder.glob("*.py")):
            continue  # templates/
        init = folder / "__init__.py"
        assert init.is_file(), f"{folder} has no __init__.py"
        assert ast.get_docstring(ast.parse(init.read_text())), f"{init} does not say what its folder is for"
        assert folder == PACKAGE or folder.name in TIERS, f"{folder.name}/ is not a tier in TIERS"


def test_no_module_imports_a_higher_tier():
    wrong = [f"{name} ({tier_of(name)}) imports {dep} ({tier_of(dep)})"
             for name, deps in graph().items() for dep in sorted(deps)
             if TIERS.index(tier_of(dep)) > TIERS.index(tier_of(name))]
    assert not wrong, "\n".join(wrong)


def test_no_import_cycles():
    edges = graph()
    done, path = set(), []

    def visit(name):
        if name in path:
            raise AssertionError("import cycle: " + " -> ".join(path[path.index(name):] + [name]))
        if name not in done:
            path.append(name)
            for dep in sorted(edges.get(name, ())):
                visit(dep)
            path.pop()
            done.add(name)

    for name in edges:
        visit(name)


def test_no_name_shadows_an_installed_package():
    """src/ is on sys.path for the scripts and the notebook: only the package and the thin scripts live there,
    and none of their names is a module another installed package provides (data/reading.py once hid PyTables)."""
    top = {p.stem if p.suffix == ".py" else p.name for p in (ROOT / "src").iterdir()
           if p.name != "__pycache__" and not p.name.endswith(".egg-info")}
    assert top == {"imdb_distilbert"} | {Path(s).stem for s in SCRIPTS}
    provided = importlib.metadata.packages_distributions()
    assert not top & set(provided), top & set(provided)


def test_scripts_only_run_a_modules_main():
    for name in SCRIPTS:
        tree = ast.parse((ROOT / "src" / name).read_text())
        code = [n for n in tree.body if not isinstance(n, (ast.Import, ast.ImportFrom, ast.If))
                and not (isinstance(n, ast.Expr) and isinstance(n.value, ast.Constant))]
        assert not code, f"src/{name} does more than import and call a main()"
        assert len((ROOT / "src" / name).read_text().splitlines()) <= 15, name


def test_importing_the_package_sets_keras_2_up_and_imports_nothing_heavy():
    """So `import imdb_distilbert` before ktrain is all a user needs, and the Colab set-up cell (which imports
    the package's colab folder) runs before NumPy, pandas or TensorFlow are imported."""
    code = ("import sys, os; sys.path.insert(0, sys.argv[1]); from imdb_distilbert import colab\n"
            "heavy = sorted({'numpy', 'pandas', 'tensorflow', 'ktrain', 'transformers'} & set(sys.modules))\n"
            "print(os.environ.get('TF_USE_LEGACY_KERAS'), heavy)")
    env = {k: v for k, v in __import__("os").environ.items() if k != "TF_USE_LEGACY_KERAS"}
    result = subprocess.run([sys.executable, "-c", code, str(ROOT / "src")], capture_output=True, text=True,
                            env=env, timeout=60)
    assert result.stdout.split() == ["1", "[]"], result.stdout + result.stderr


def requirements(name):
    """{package: "==version"} of a requirements file, following its -r lines."""
    pins = {}
    for line in (ROOT / name).read_text().splitlines():
        line = line.split("#")[0].split(";")[0].strip()
        if line.startswith("-r "):
            pins.update(requirements(line[3:].strip()))
        elif "==" in line:
            package, version = line.split("==")
            pins[canonical(package)] = version.strip()
    return pins


def canonical(name):
    return name.strip().lower().replace("_", "-")


def test_pyproject_extras_pin_what_the_requirements_files_pin():
    """Each extra of pyproject.toml asks for the versions its requirements file installs (and nothing it lacks)."""
    import tomllib

    extras = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]["optional-dependencies"]
    files = {"training": "requirements.txt", "onnx": "requirements-onnx.txt", "export": "requirements-export.txt",
             "serve": "requirements-serve.txt", "spark": "requirements-spark.txt",
             "explain": "requirements-explain.txt", "dev": "requirements-dev.txt"}
    assert set(extras) == set(files)

    def pins(extra):
        found = {}
        for requirement in extras[extra]:
            if requirement.startswith("imdb-distilbert["):
                for other in requirement[len("imdb-distilbert["):-1].split(","):
                    found.update(pins(other))
            else:
                package, version = requirement.split("==")
                found[canonical(package)] = version
        return found

    for extra, name in files.items():
        installed = requirements(name)
        wrong = {p: (v, installed.get(p)) for p, v in pins(extra).items() if installed.get(p) != v}
        assert not wrong, f"pyproject's [{extra}] and {name} disagree (pyproject, file): {wrong}"


def test_ruff_finds_nothing():
    """The lint settings are pyproject.toml's [tool.ruff]; `ruff check` is how to run them by hand."""
    result = subprocess.run([sys.executable, "-m", "ruff", "check", "--no-cache", "src", "tests", "benchmarks"],
                            cwd=ROOT, capture_output=True, text=True, timeout=120)
    assert result.returncode == 0, result.stdout[-4000:] + result.stderr[-2000:]
