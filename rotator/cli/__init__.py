"""The ``rotator`` command line: a thin layer over the library.

One module per verb group (``keys``, ``run``, ``tokens``, ``revocations``, ``authz``); ``_common``
holds the option sets, the settings, the error mapping and the factories they share.
"""

from __future__ import annotations

import click

from .. import __version__
from . import authz, keys, revocations, run, tokens

__all__ = ["main"]


@click.group(context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(__version__, prog_name="rotator")
def main() -> None:
    """Rotate JWT signing keys (ES256 by default) and publish their public JWKS."""


for _module in (keys, run, tokens, revocations, authz):
    for _name in _module.__all__:
        main.add_command(getattr(_module, _name))
