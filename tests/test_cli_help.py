"""Every `latcomp ... --help`, for every command found in the parser (so commands added later are covered):
each option shows a help text and its default (or says it is required); dataclass configs become flags."""

from __future__ import annotations

import argparse
import dataclasses
import re

import pytest

from latcomp.cli import build_parser, main
from latcomp.training.cli import _add_dataclass_flags, _config_from_args


def _commands(parser: argparse.ArgumentParser, path: tuple[str, ...] = ()):
    yield path, parser
    for action in parser._actions:
        if isinstance(action, argparse._SubParsersAction):
            for name, command in action.choices.items():
                yield from _commands(command, (*path, name))


COMMANDS = [path for path, _ in _commands(build_parser())]


def _option_lines(text: str) -> dict[str, str]:
    """First name of each option or positional in a --help text -> its whole entry, wrapped lines joined."""
    entries, current = {}, None
    for line in text.splitlines():
        start = re.match(r"^  (-[\w-]+|\w+)\b", line)
        if start and not line.startswith("   "):
            current = start.group(1)
            entries[current] = line.strip()
        elif current and line.startswith("    "):
            entries[current] += " " + line.strip()
        else:
            current = None
    return entries


@pytest.mark.parametrize("path", COMMANDS, ids=lambda path: " ".join(path) or "latcomp")
def test_every_option_shows_help_and_default(path, capsys):
    with pytest.raises(SystemExit) as exited:
        main([*path, "--help"])
    assert exited.value.code == 0
    shown = _option_lines(capsys.readouterr().out)
    parser = dict(_commands(build_parser()))[path]
    for action in parser._actions:
        if isinstance(action, (argparse._HelpAction, argparse._VersionAction, argparse._SubParsersAction)):
            continue
        name = action.option_strings[0] if action.option_strings else action.metavar or action.dest
        entry = shown.get(name, "")
        assert action.help and action.help.strip(), f"latcomp {' '.join(path)} {name}: no help text"
        if action.option_strings or action.nargs in ("?", "*"):
            assert action.required or re.search(r"default", entry, re.I), (
                f"latcomp {' '.join(path)} {name}: --help shows no default: {entry!r}")


def test_train_gan_help_names_the_defaults_it_used_to_hide(capsys):
    with pytest.raises(SystemExit):
        main(["train-gan", "--help"])
    shown = _option_lines(capsys.readouterr().out)
    assert "(default: 32)" in shown["--batch-size"] and "(default: 128)" in shown["--channel-max"]
    assert "(default: 0.002)" in shown["--lr"]


@dataclasses.dataclass
class _Example:
    name: str
    amp: bool = True
    widths: tuple[int, ...] = (32, 64)
    scale: float | None = None

    HELP = {"name": "a name", "amp": "mixed precision", "widths": "channel widths", "scale": "a scale"}


def test_dataclass_flags_cover_bools_tuples_and_optionals():
    parser = argparse.ArgumentParser()
    _add_dataclass_flags(parser, _Example)
    args = parser.parse_args(["--name", "x", "--no-amp", "--widths", "8", "16"])
    config = _config_from_args(_Example, args)
    assert config == _Example("x", amp=False, widths=(8, 16), scale=None)
    assert _config_from_args(_Example, parser.parse_args(["--name", "y", "--scale", "0.5"])).amp is True
    with pytest.raises(SystemExit):
        parser.parse_args([])  # --name has no default: required


def test_a_field_without_help_is_refused():
    @dataclasses.dataclass
    class Undocumented:
        steps: int = 1

    with pytest.raises(KeyError, match="steps"):
        _add_dataclass_flags(argparse.ArgumentParser(), Undocumented)
