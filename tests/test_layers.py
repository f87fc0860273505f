"""Imports run one way: cli -> experiments -> library; plans/ and trainers/ -> library. The library never imports
the command lines, the experiments, or the installed wrapper packages, so a source checkout imports it as is."""
import ast
import os
import subprocess
import sys

import pytest

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
WRAPPERS = ("nnunet_ext_plans", "nnunet_ext_trainers", "plans", "trainers")


def _module_name(path: str) -> str:
    relative = os.path.relpath(path, REPO)[:-len(".py")].split(os.sep)
    return ".".join(relative[:-1] if relative[-1] == "__init__" else relative)


def _imports(path: str):
    """Every module `path` imports (at any depth: imports inside functions count), absolute names."""
    package = _module_name(path)
    if not path.endswith("__init__.py"):
        package = package.rpartition(".")[0]
    for node in ast.walk(ast.parse(open(path).read(), path)):
        if isinstance(node, ast.Import):
            yield from (alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                parts = package.split(".")
                base = ".".join(parts[:len(parts) - node.level + 1] + ([base] if base else []))
            yield base
            yield from (f"{base}.{alias.name}" for alias in node.names)


def _python_files(folder: str):
    for root, _, files in os.walk(os.path.join(REPO, folder)):
        yield from (os.path.join(root, f) for f in sorted(files) if f.endswith(".py"))


def _layer(module: str) -> str:
    if module.startswith("nnunet_ext.cli"):
        return "cli"
    if module.startswith("nnunet_ext.experiments"):
        return "experiments"
    return "library"


def _within(name: str, package: str) -> bool:
    return name == package or name.startswith(package + ".")


# who may import what, beyond the library itself and third-party packages
FORBIDDEN = {
    "library": ("nnunet_ext.cli", "nnunet_ext.experiments") + WRAPPERS,
    "experiments": ("nnunet_ext.cli",) + WRAPPERS,
    "cli": WRAPPERS,
    "plans": ("nnunet_ext.cli", "nnunet_ext.experiments", "nnunet_ext_trainers", "trainers"),
}


def _violations():
    found = []
    for path in _python_files("nnunet_ext"):
        layer = _layer(_module_name(path))
        found += [(os.path.relpath(path, REPO), name) for name in _imports(path)
                  if any(_within(name, banned) for banned in FORBIDDEN[layer])]
    for path in _python_files("plans"):
        found += [(os.path.relpath(path, REPO), name) for name in _imports(path)
                  if any(_within(name, banned) for banned in FORBIDDEN["plans"])]
    return sorted(set(found))


def test_imports_run_one_way():
    assert _violations() == []


@pytest.mark.parametrize("source,expected", [
    ("from nnunet_ext.cli.postprocess import postprocess_folder", "nnunet_ext.cli.postprocess"),
    ("from ..cli import postprocess", "nnunet_ext.cli"),
    ("def f():\n    import nnunet_ext_plans.cpu_plans", "nnunet_ext_plans.cpu_plans"),
])
def test_the_check_sees_absolute_relative_and_local_imports(tmp_path, monkeypatch, source, expected):
    folder = tmp_path / "nnunet_ext" / "experiments"
    folder.mkdir(parents=True)
    (folder / "bad.py").write_text(source)
    monkeypatch.setattr(sys.modules[__name__], "REPO", str(tmp_path))
    assert expected in list(_imports(str(folder / "bad.py")))
    assert _violations() != []


def test_a_source_checkout_imports_without_the_wrapper_packages():
    """Every library and experiments module imports from the checkout with nnunet_ext_plans / nnunet_ext_trainers
    made unimportable (as when the repository is not installed)."""
    modules = [_module_name(p) for p in _python_files("nnunet_ext") if _layer(_module_name(p)) != "cli"]
    script = ("import importlib, sys\n"
              "for name in ('nnunet_ext_plans', 'nnunet_ext_trainers', 'plans', 'trainers'):\n"
              "    sys.modules[name] = None\n"
              f"for module in {modules!r}:\n"
              "    importlib.import_module(module)\n"
              "from nnunet_ext.planning.templates import load_template\n"
              "assert load_template('upattllstm_cpu')['patch_size']\n")
    result = subprocess.run([sys.executable, "-c", script], cwd=REPO, capture_output=True, text=True)
    assert result.returncode == 0, result.stderr[-2000:]


def test_the_prediction_command_imports_neither_torch_nor_the_trainer():
    """nnunet_ext_predict runs nnUNetv2_predict in a process of its own: importing torch and nnU-Net's trainer here
    as well (to read a settings file) cost 4 s per prediction."""
    script = ("import sys, nnunet_ext.cli.predict_missing\n"
              "print([m for m in ('torch', 'nnunetv2.training.nnUNetTrainer.nnUNetTrainer') if m in sys.modules])")
    result = subprocess.run([sys.executable, "-c", script], cwd=REPO, capture_output=True, text=True)
    assert result.returncode == 0, result.stderr[-2000:]
    assert result.stdout.strip() == "[]"
