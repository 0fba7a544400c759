"""`llada` under faults: closed or invalid standard streams, bad seeds and devices, incomplete model folders, Ctrl-C
(issue 11). Each prints one line and exits non-zero; Ctrl-C exits 130 without a traceback."""

import io
import json
import shutil
import signal
import subprocess
import sys
import textwrap

import pytest

from llada import cli
from llada.cli import main

from .test_cli import model_dir  # noqa: F401  (the fixture)


def run(capsys, *argv):
    code = main([str(a) for a in argv])
    out, err = capsys.readouterr()
    return code, out, err


def test_closed_stdin_is_one_line(capsys, monkeypatch, model_dir):  # noqa: F811
    monkeypatch.setattr("sys.stdin", None)
    code, out, err = run(capsys, "generate", "--model", model_dir)
    assert code == 1 and out == ""
    assert err == "llada: error: no prompt: standard input is closed; pass the prompt as an argument\n"
    code, _, err = run(capsys, "chat", "--model", model_dir)
    assert code == 1 and "standard input is closed" in err


def test_invalid_utf8_on_stdin_is_one_line(capsys, monkeypatch, model_dir):  # noqa: F811
    monkeypatch.setattr("sys.stdin", io.TextIOWrapper(io.BytesIO(b"In the \xff beginning"), encoding="utf-8"))
    code, out, err = run(capsys, "generate", "--model", model_dir)
    assert code == 1 and out == ""
    assert err.startswith("llada: error: standard input is not valid UTF-8 (byte b'\\xff' at offset 7)")
    assert err.count("\n") == 1


def test_closed_stdout_is_an_error_not_lost_text(capsys, monkeypatch, model_dir):  # noqa: F811
    monkeypatch.setattr("sys.stdout", None)
    code = main(["generate", "--model", str(model_dir), "In the beginning"])
    assert code == 1
    assert "standard output is closed" in capsys.readouterr().err


@pytest.mark.parametrize("seed, message", [(str(2**70), "outside [0, 2**63)"), ("abc", "'abc' is not an integer")])
def test_bad_seed_is_an_argument_error(capsys, model_dir, seed, message):  # noqa: F811
    with pytest.raises(SystemExit) as exit_info:
        main(["generate", "--model", str(model_dir), "--seed", seed, "hi"])
    assert exit_info.value.code == 2 and message in capsys.readouterr().err


def test_meta_device_is_one_line(capsys, model_dir):  # noqa: F811
    code, _, err = run(capsys, "generate", "--model", model_dir, "--device", "meta", "hi")
    assert code == 1 and err == (
        "llada: error: --device meta holds no weights (shapes only) and cannot generate; use cpu, cuda or mps\n"
    )


def test_model_folder_without_tokenizer_names_the_files(capsys, model_dir, tmp_path):  # noqa: F811
    folder = tmp_path / "no-tokenizer"
    folder.mkdir()
    for name in ("config.json", "model.safetensors", "generation_config.json"):
        shutil.copy(model_dir / name, folder / name)
    code, _, err = run(capsys, "generate", "--model", folder, "hi")
    assert code == 1 and err.count("\n") == 1
    assert f"{folder} has no tokenizer (none of tokenizer.json, tokenizer_config.json" in err
    assert err.rstrip().endswith("tokenizer.save_pretrained(folder)")


def test_weights_that_do_not_cover_the_config_are_an_error(capsys, model_dir, tmp_path):  # noqa: F811
    folder = tmp_path / "bad-config"
    shutil.copytree(model_dir, folder)
    config = json.loads((folder / "config.json").read_text())
    del config["n_layers"]  # the default (32 blocks) is built; the weights hold 2
    (folder / "config.json").write_text(json.dumps(config))
    code, out, err = run(capsys, "generate", "--model", folder, "hi")
    assert code == 1 and out == ""
    assert "does not hold" in err and "randomly initialized" in err and "transformer.blocks." in err


def test_the_interrupt_handler_is_installed_while_a_command_runs_and_restored(monkeypatch, capsys):
    seen = []
    monkeypatch.setattr(cli, "cmd_info", lambda args: seen.append(signal.getsignal(signal.SIGINT)) or 0)
    before = signal.getsignal(signal.SIGINT)
    main(["info"])
    assert seen == [cli._interrupted] and signal.getsignal(signal.SIGINT) is before


def test_ctrl_c_exits_130_without_a_traceback():
    # SIGINT at the earliest point of a command (while its parser is built), then a second one: status 130, quiet.
    # cli.py is loaded on its own (its top-level imports are the standard library), so the process starts in
    # milliseconds; the handler does not depend on what was imported.
    script = textwrap.dedent(
        """
        import importlib.util, os, signal, sys, time

        spec = importlib.util.spec_from_file_location("llada_cli_alone", sys.argv[1])
        cli = importlib.util.module_from_spec(spec)
        spec.loader.exec_module(cli)
        build_parser = cli.build_parser

        def interrupted_parser(argv):
            os.kill(os.getpid(), signal.SIGINT)
            os.kill(os.getpid(), signal.SIGINT)
            time.sleep(30)
            return build_parser(argv)

        cli.build_parser = interrupted_parser
        sys.exit(cli.main(["info"]))
        """
    )
    result = subprocess.run([sys.executable, "-c", script, cli.__file__], capture_output=True, text=True, timeout=120)
    assert result.returncode == 130, result.stderr
    assert "Traceback" not in result.stderr and "KeyboardInterrupt" not in result.stderr
