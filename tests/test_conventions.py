"""One set of conventions: paths, option names, registries, errors, and the checkout guard."""

from __future__ import annotations

import dataclasses
import json
import subprocess
import sys
import textwrap

import click
import pytest
from click.testing import CliRunner
from conftest import REPO
from vqa_pipe.pipeline.backbones import get_backbone_config
from vqa_pipe.pipeline.branches import BRANCHES, branch_option_classes, build_branches
from vqa_pipe.pipeline.datasets import get_dataset
from vqa_pipe.pipeline.errors import VqaPipeError
from vqa_pipe.pipeline.layout import Layout, LayoutError, resolve_dataset
from vqa_pipe.pipeline.options import OptionError, option_fields
from vqa_pipe.pipeline.regressors import get_regressor
from vqa_pipe.pipeline.store import FeatureStore
from vqa_pipe.stages.extract import ExtractOptions

import vqa_pipe.cli as cli
from vqa_pipe.cli import main


def _ok(result) -> str:
    assert result.exit_code == 0, result.output
    return result.output


def test_extract_train_report_with_no_path_given(tmp_path, monkeypatch):
    """The layout: every command finds the others' outputs from the dataset name alone."""
    monkeypatch.chdir(tmp_path)
    run = CliRunner().invoke
    _ok(run(main, ["demo", "--data-only", "--scenes", "1", "--first-scene", "2"]))
    _ok(run(main, ["manifest", "build", "demo", "--root", "demo/demo/data"]))
    out = _ok(run(main, ["extract", "--dataset", "demo", "--clip-model", "vqa-tiny-clip",
                         "--random-weights", "--max-frames", "2", "--no-progress"]))
    assert "16 extracted" in out and (tmp_path / "features" / "demo.zarr").is_dir()
    _ok(run(main, ["train", "--dataset", "demo", "--regressor", "ridge", "--splits", "2",
                   "--test-ratio", "0.3", "--no-progress"]))
    assert (tmp_path / "runs" / "demo" / "ridge" / "metrics.json").is_file()
    out = _ok(run(main, ["report", "--datasets", "demo", "--regressors", "ridge"]))
    assert "RANDOM WEIGHTS" in out
    metrics = json.loads((tmp_path / "reports" / "metrics.json").read_text())
    assert set(metrics["ridge"]["demo"]["demo"]) >= {"srocc", "plcc"}
    # inspect takes the dataset name too
    assert "semantic" in _ok(run(main, ["inspect", "demo"]))


def test_demo_honours_first_scene_without_data_only(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    out = _ok(CliRunner().invoke(main, [
        "demo", "--name", "d3", "--scenes", "1", "--first-scene", "3", "--random-weights",
        "--max-frames", "1", "--no-progress"]))
    assert "16 extracted" in out
    from vqa_pipe.pipeline.demo_clips import SCENES

    ids = FeatureStore.open(tmp_path / "features" / "d3.zarr").video_ids
    assert {v.split("__")[0] for v in ids} == {SCENES[3]}


def test_resolve_dataset_paths_and_errors(tmp_path):
    layout = Layout(tmp_path)
    with pytest.raises(LayoutError, match="vqa-pipe manifest build konvid"):
        resolve_dataset("konvid", layout=layout)
    layout.manifest("konvid").parent.mkdir()
    layout.manifest("konvid").write_text("video_id,path,mos,mos_scale\n")
    paths = resolve_dataset("konvid", layout=layout)
    assert paths.store == tmp_path / "features" / "konvid.zarr"
    assert resolve_dataset(manifest=layout.manifest("konvid")).name == "konvid"
    with pytest.raises(LayoutError, match="cannot be a folder name"):
        resolve_dataset("../etc", layout=layout)
    assert layout.run("konvid", "svr") == tmp_path / "runs" / "konvid" / "svr"
    assert layout.cross("a", "svr", "b") == tmp_path / "cross" / "a" / "svr" / "b"


def test_params_file_keys_are_option_names(tmp_path):
    params = tmp_path / "p.yaml"
    params.write_text("extract:\n  max-frames: 3\n  timeout: 7\n  grid: 2x2\n")
    help_text = _ok(CliRunner().invoke(main, ["--params", str(params), "extract", "--help"]))
    assert "[default: 3;" in help_text and "[default: 7" in help_text
    assert "[default: 2x2]" in help_text
    params.write_text("train:\n  n_splits: 3\n")
    result = CliRunner().invoke(main, ["--params", str(params), "train", "--help"])
    assert result.exit_code != 0
    assert "unknown keys ['n_splits']" in result.output and "'splits'" in result.output


def test_params_file_lists_and_malformed_yaml(tmp_path):
    """YAML lists are values like their comma-separated text; malformed YAML is one line
    naming the file and the place."""
    params = tmp_path / "p.yaml"
    params.write_text("extract:\n  branches: [semantic, spatial]\n  grid: [2, 3]\n"
                      "report:\n  datasets: [a, b]\n  regressors: [ridge]\n"
                      "  evaluate: false\n")
    missing = str(tmp_path / "none.csv")
    result = CliRunner().invoke(main, ["--params", str(params), "extract", "--manifest", missing])
    assert result.exit_code == 1 and "Invalid value" not in result.output
    assert "none.csv" in result.output  # got past the options, to the missing manifest
    result = CliRunner().invoke(main, ["--params", str(params), "report"])
    assert result.exit_code == 1 and "runs/a/ridge/metrics.json" in result.output
    params.write_text("extract:\n  branches: [semantic\n")
    result = CliRunner().invoke(main, ["--params", str(params), "extract", "--help"])
    assert result.exit_code == 2 and "Traceback" not in result.output
    assert f"{params}: not valid YAML (line 3, column 1)" in result.output
    lists = tmp_path / "lists.yaml"
    lists.write_text("- a\n")
    result = CliRunner().invoke(main, ["report", "--lists-from", str(lists)])
    assert result.exit_code == 2 and "expected a mapping" in result.output


def test_option_values_are_checked_with_one_line_errors(tmp_path):
    run = CliRunner().invoke
    for args, message in [
        (["--grid", "10x10"], "rows and columns must be 1..9"),
        (["--softmax", "x"], "'x' is not one of"),
        (["--limit", "-1"], "-1 is not in the range x>=1"),
        (["--branches", "semantic,colour"], "choose from semantic, spatial"),
    ]:
        result = run(main, ["extract", "--manifest", str(tmp_path / "m.csv"), *args])
        assert result.exit_code == 2 and message in result.output, result.output
    with pytest.raises(OptionError, match="option 'limit' must be >= 1"):
        ExtractOptions(limit=-1)
    with pytest.raises(OptionError, match="option 'part_size' must be a whole number"):
        ExtractOptions(part_size=2.5)
    with pytest.raises(OptionError, match="unknown branch option"):
        build_branches(["semantic"], gird="3x3")


def test_declared_options_are_unique_and_all_on_the_cli():
    classes = [ExtractOptions, *branch_option_classes()]
    names = [f.name for cls in classes for f in option_fields(cls)]
    assert len(names) == len(set(names))
    extract = cli.main.commands["extract"]
    assert {p.name for p in extract.params} >= set(names)
    for _, spec in BRANCHES.items():
        assert spec.arrays and all(isinstance(v, str) and v for v in spec.arrays.values())
        assert dataclasses.is_dataclass(spec.options)


@pytest.mark.parametrize(
    "lookup, kind",
    [
        (get_regressor, "regressor"),
        (get_dataset, "dataset"),
        (BRANCHES.get, "branch"),
        (get_backbone_config, "spatial backbone"),
    ],
)
def test_registries_share_one_lookup_error(lookup, kind):
    with pytest.raises(VqaPipeError, match=rf"unknown {kind} 'nosuch'; valid: \w+"):
        lookup("nosuch")


def test_report_with_an_unknown_regressor_lists_the_valid_ones(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    result = CliRunner().invoke(main, ["report", "--datasets", "a", "--regressors", "xgb"])
    assert result.exit_code == 1
    assert "unknown regressor(s) xgb; valid:" in result.output and "svr" in result.output


def test_every_option_has_help():
    def walk(command: click.Command, path: str):
        if isinstance(command, click.Group):
            for name, sub in command.commands.items():
                yield from walk(sub, f"{path} {name}")
        else:
            for param in command.params:
                if isinstance(param, click.Option):
                    yield path, param

    missing = [f"{path} {p.opts[0]}" for path, p in walk(main, "vqa-pipe") if not p.help]
    assert missing == []  # e.g. `rescore --device` had none


def test_a_command_module_that_fails_to_import_is_an_error(monkeypatch):
    monkeypatch.setattr(cli, "COMMAND_MODULES", ("no_such_command_module",))
    with pytest.raises(ModuleNotFoundError):
        cli._register()


def test_project_errors_are_one_line_and_bugs_keep_their_traceback():
    @click.command("boom")
    @click.argument("kind")
    def boom(kind):
        if kind == "user":
            raise OptionError("option 'x' must be >= 1, got 0")
        raise ZeroDivisionError("a bug")

    main.add_command(boom)
    try:
        user = CliRunner().invoke(main, ["boom", "user"])
        assert user.exit_code == 1 and user.output.strip() == (
            "Error: option 'x' must be >= 1, got 0"
        )
        bug = CliRunner().invoke(main, ["boom", "bug"])
        assert isinstance(bug.exception, ZeroDivisionError)
    finally:
        main.commands.pop("boom")


def test_code_comes_from_the_checkout_it_is_imported_from(tmp_path):
    """A second clone's vqa_pipe binds *its own* pipeline/ and stages/, whatever the editable
    install points to."""
    clone = tmp_path / "clone"
    (clone / "vqa_pipe").mkdir(parents=True)
    (clone / "vqa_pipe" / "__init__.py").write_text((REPO / "vqa_pipe" / "__init__.py").read_text())
    (clone / "pyproject.toml").write_text("[project]\nname = 'vqa-pipe'\n")
    for name in ("pipeline", "stages"):
        (clone / name).mkdir()
        (clone / name / "__init__.py").write_text(f"WHERE = 'clone {name}'\n")
    code = textwrap.dedent("""
        import vqa_pipe.pipeline, vqa_pipe.stages
        print(vqa_pipe.pipeline.WHERE, '|', vqa_pipe.stages.WHERE)
    """)
    out = subprocess.run([sys.executable, "-c", code], cwd=clone, capture_output=True,
                         text=True, env={"PATH": "/usr/bin:/bin", "PYTHONPATH": str(clone)})
    assert out.returncode == 0, out.stderr
    assert out.stdout.strip() == "clone pipeline | clone stages"


def test_regressors_command_lists_each_parameter_with_its_valid_values():
    listing = _ok(CliRunner().invoke(main, ["regressors"]))
    for name in ("svr", "ridge", "mlp", "gru", "vsfa", "fused", "fastvqa", "clipvqa"):
        assert name in listing
    svr = _ok(CliRunner().invoke(main, ["regressors", "svr"]))
    assert "epsilon: a number >= 0" in svr and "reads: flat" in svr
    bad = CliRunner().invoke(main, ["train", "--dataset", "x", "--regressor", "mlp",
                                    "--param", "hidden=0"])
    assert bad.exit_code != 0


def test_test_modules_share_helpers_through_one_module_not_each_other():
    import ast

    offenders = []
    for path in sorted((REPO / "tests").glob("test_*.py")):
        for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
            names = [node.module] if isinstance(node, ast.ImportFrom) and node.module else [
                a.name for a in getattr(node, "names", [])] if isinstance(node, ast.Import) else []
            offenders += [f"{path.name}: {n}" for n in names if n and n.startswith("test_")]
    assert offenders == []  # shared helpers live in tests/helpers.py, fixtures in conftest.py


_IMPORT_PROBE = """
import sys
from click.testing import CliRunner
from vqa_pipe.cli import main
runner = CliRunner()
assert runner.invoke(main, ["--help"]).exit_code == 0
for name in sorted(main.commands):
    result = runner.invoke(main, [name, "--help"])
    assert result.exit_code == 0, (name, result.output)
print(" ".join(m for m in ("torch", "dask", "sklearn", "zarr", "open_clip") if m in sys.modules))
"""


def test_help_of_every_command_imports_no_heavy_library():
    import subprocess
    import sys

    out = subprocess.run([sys.executable, "-c", _IMPORT_PROBE], capture_output=True, text=True,
                         check=True).stdout
    assert out.strip() == ""  # e.g. "torch dask" when a command module imports them at the top
