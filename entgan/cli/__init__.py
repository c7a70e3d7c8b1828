"""The `entgan` command line (the top layer): `verbs.py` holds one plain function per verb,
`options.py` each verb's typed options and parser."""

from entgan.cli.verbs import main

__all__ = ["main"]
