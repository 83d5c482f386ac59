"""One CLI style for every command: jsonargparse parsers like ``fit``'s LightningCLI.

Every command's parser shows defaults in ``--help``, accepts ``--config FILE`` (a YAML of the same
options, keys without ``--``) and ``--print_config``, names itself ``python -m rec_lightning <cmd>``
in its usage line, and answers an unknown option with the nearest valid one (``difflib``).
"""

from __future__ import annotations

import difflib
import re
from typing import Any, Callable, Sequence

from jsonargparse import ActionConfigFile, ArgumentParser, DefaultHelpFormatter

PROG = "python -m rec_lightning"
#: The cut-offs K of evaluate/baseline's --ks: ``rec_lightning.evaluation.metrics.DEFAULT_KS`` (a test keeps them
#: equal), written here so that parsing a command's options imports neither torch nor torchmetrics.
DEFAULT_KS = (1, 3, 5, 10, 20, 50)
_OPTION = re.compile(r"--[A-Za-z_][\w.\-]*")


def known_options(parser: Any) -> list[str]:
    """Every ``--option`` of ``parser`` and of its subcommand parsers (``fit``'s ``--trainer.max_steps`` ...)."""
    found: list[str] = []
    for action in getattr(parser, "_actions", []):
        found += [o for o in action.option_strings if o.startswith("--")]
        for sub in (getattr(action, "choices", None) or {}).values() if isinstance(getattr(action, "choices", None), dict) else []:
            found += known_options(sub)
    return sorted(set(found))


def nearest_option_hint(message: str, options: Sequence[str]) -> str:
    """``\\nDid you mean --x?`` for the first unknown ``--option`` in an error ``message`` that has a close match."""
    unknown = [o for o in _OPTION.findall(message) if o not in options]
    for option in unknown:
        key = option.split("=", 1)[0]
        group = key.split(".", 1)[0] + "."  # a nested key's hint stays in its group (--model.x never -> --trainer.y)
        same_group = [o for o in options if o.startswith(group)] if "." in key else list(options)
        close = difflib.get_close_matches(key, same_group, n=1, cutoff=0.6)
        if close:
            return f"\nDid you mean {close[0]}?"
    return ""


class RecHelpFormatter(DefaultHelpFormatter):
    """jsonargparse's help with one default per option: an option whose help already says its default in
    words (``(default: the demo data set)``) does not get a second ``(default: null)``."""

    def _get_help_string(self, action: Any) -> str:
        text = super()._get_help_string(action)
        if "default:" in (action.help or "") and "%(default)" not in (action.help or ""):
            text = text.replace(", default: %(default)s", "").replace(" (default: %(default)s)", "")
        return text


class RecParserStyle:
    """The one CLI style, mixed into a jsonargparse parser class (every command's and ``fit``'s): help by
    :class:`RecHelpFormatter`, no abbreviated options (``--check`` is not ``--checkpoint``), and errors for an
    unknown key that end with the nearest valid key."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        if kwargs.get("formatter_class") in (None, DefaultHelpFormatter):
            kwargs["formatter_class"] = RecHelpFormatter
        kwargs["allow_abbrev"] = False
        super().__init__(*args, **kwargs)

    def error(self, message: str, ex: Exception | None = None):  # noqa: D102 - see the class docstring
        return super().error(message + nearest_option_hint(message, known_options(self)), ex)


class SuggestingParser(RecParserStyle, ArgumentParser):
    """The parser of every non-Trainer command (:class:`RecParserStyle` on jsonargparse's ``ArgumentParser``)."""


def command_parser(command: str, description: str) -> SuggestingParser:
    """The parser of ``python -m rec_lightning <command>``, with ``--config`` and ``--print_config``."""
    parser = SuggestingParser(prog=f"{PROG} {command}", description=description)
    parser.add_argument("--config", action=ActionConfigFile,
                        help="a YAML file of these options (keys as below, without --); later flags override it")
    return parser


def run_function(function: Callable, command: str, argv: Sequence[str]) -> Any:
    """``jsonargparse.CLI(function)`` in this style: options from its typed signature and docstring."""
    from jsonargparse import CLI

    return CLI(function, args=list(argv), as_positional=False, prog=f"{PROG} {command}", parser_class=SuggestingParser)
