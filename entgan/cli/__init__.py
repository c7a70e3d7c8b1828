"""The `entgan` command line (the top layer): `main.py` holds one plain function per verb,
`options.py` each verb's typed options and parser."""

from entgan.cli.main import main

__all__ = ["main"]
