"""`python -m entgan.cli ...`: the same as the `entgan` command."""

from entgan.cli.verbs import main

if __name__ == "__main__":
    raise SystemExit(main())
