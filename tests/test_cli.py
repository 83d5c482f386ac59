from cli_helpers import run_cli

from rec_lightning.cli import COMMANDS, main


def test_help_lists_commands(capsys):
    main(["--help"])
    out = capsys.readouterr().out
    for name in ("fit", "validate", "test", "predict", "make-demo-data", "download", "check-data"):
        assert f"  {name} " in out


def test_every_registered_command_module_has_main():
    import importlib
    import importlib.util

    for name, (module, _) in COMMANDS.items():
        if importlib.util.find_spec(f"rec_lightning.commands.{module}") is not None:
            assert callable(importlib.import_module(f"rec_lightning.commands.{module}").main), name


def test_make_demo_data_and_check_data_commands(tmp_path):
    out = tmp_path / "demo"
    run = lambda *args: run_cli(*args, cwd=tmp_path)  # noqa: E731
    made = run("make-demo-data", "--output", str(out), "--num_users", "50")
    assert made.returncode == 0, made.stderr
    assert "wrote demo data set Demo_Shop" in made.stdout
    checked = run("check-data", "--data_dir", str(out), "--category", "Demo_Shop")
    assert checked.returncode == 0, checked.stderr
    assert "items 360, SID levels (3,)" in checked.stdout
    bad = run("check-data", "--data_dir", str(out), "--category", "Nope")
    assert bad.returncode != 0 and "no SID index for category 'Nope'" in bad.stderr


def test_unknown_command_exits_2():
    result = run_cli("frobnicate")
    assert result.returncode == 2 and "unknown command 'frobnicate'" in result.stderr
