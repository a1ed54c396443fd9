"""The help formatter of every ``layer-analysis`` subcommand."""

from __future__ import annotations

import argparse


class DefaultsFormatter(argparse.ArgumentDefaultsHelpFormatter):
    """Shows an option's default unless it is unset (None/False) or the help already says it."""

    def _get_help_string(self, action: argparse.Action) -> str:
        text = action.help or ""
        if action.default is None or action.default is False or "default" in text \
                or action.default == argparse.SUPPRESS:
            return text
        return super()._get_help_string(action)
