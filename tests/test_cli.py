"""The command line: help everywhere, and every bad input ends in one line on stderr and status 2."""

import subprocess
import sys

import pytest

from compactnas.cli import build_parser, main


def _commands():
    parser = build_parser()
    sub = next(a for a in parser._actions if a.__class__.__name__ == "_SubParsersAction")
    return sorted(sub.choices)


@pytest.mark.parametrize("command", _commands())
def test_help_on_every_command(command, capsys):
    with pytest.raises(SystemExit) as e:
        main([command, "--help"])
    assert e.value.code == 0
    assert "usage:" in capsys.readouterr().out


@pytest.mark.parametrize(
    "argv, message",
    [
        (["search", "--space", "nope"], "unknown search space 'nope'"),
        (["search", "--sampler", "cmaes"], "unknown sampler 'cmaes'"),
        (["search", "--objectives", "accuracy,beauty"], "unknown objective 'beauty'"),
        (["search", "--objectives", "accuracy,energy"], "need a device profile"),
        (["search", "--data", "npz:/no/such.npz"], "no such file"),
        (["search", "--data", "imagenet"], "unknown data source"),
        (["search", "--trials", "0"], "trials must be >= 1"),
        (["search", "--trials", "many"], "invalid int value"),
        (["search", "--config", "/no/such.yaml"], "config file not found"),
        (["search", "--optimizer", "lbfgs"], "unknown optimizer"),
        (["show", "/no/such/search"], "holds no search results"),
        (["ui", "/no/such/search"], "holds no MLflow store"),
        (["frobnicate"], "invalid choice"),
    ],
)
def test_bad_input_is_one_line_and_status_2(argv, message, tmp_path, capsys):
    argv = [*argv, "--out", str(tmp_path / "o")] if argv[0] == "search" else argv
    try:
        code = main(argv)
    except SystemExit as e:  # argparse's own errors
        code = e.code
    err = capsys.readouterr().err
    assert code == 2
    assert message in err
    assert len(err.strip().splitlines()) == 1, err
    assert "Traceback" not in err


@pytest.mark.parametrize(
    "text, message",
    [
        ("space: mobile\nbogus: 1\n", "unknown field(s) bogus"),
        ("trials: [1, 2\n", "not valid YAML"),
        ("trials: lots\n", "'trials' must be int"),
        ("- a\n- b\n", "must hold a mapping"),
        ("compress: 3\n", "must be true or false"),
    ],
)
def test_bad_config_files(tmp_path, capsys, text, message):
    cfg = tmp_path / "c.yaml"
    cfg.write_text(text)
    assert main(["search", "--config", str(cfg), "--out", str(tmp_path / "o")]) == 2
    err = capsys.readouterr().err
    assert message in err and len(err.strip().splitlines()) == 1


def test_config_file_and_flags(tmp_path, digits, capsys):
    cfg = tmp_path / "c.yaml"
    cfg.write_text("trials: 2\nepochs: 1\nsampler: random\nobjectives: [accuracy, size]\n")
    out = tmp_path / "o"
    assert (
        main(["search", "--config", str(cfg), "--trials", "3", "--out", str(out), "--quiet"]) == 0
    )
    printed = capsys.readouterr().out
    assert "3 complete" in printed and "Pareto front" in printed
    assert main(["show", str(out)]) == 0
    assert "Pareto front" in capsys.readouterr().out
    assert main(["search", "--config", str(cfg), "--out", str(out), "-q"]) == 2
    assert "--resume" in capsys.readouterr().err


@pytest.mark.slow
def test_real_process_exit_status(tmp_path):
    proc = subprocess.run(
        [sys.executable, "-m", "compactnas", "search", "--space", "nope", "--out", str(tmp_path)],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert proc.returncode == 2
    assert (
        proc.stderr.strip()
        == "compactnas: error: unknown search space 'nope' (known: mobile, nb201, squeeze)"
    )
    assert "Traceback" not in proc.stderr
