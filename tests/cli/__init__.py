"""Tests of the `entgan` command line (`entgan/cli/`) and the Makefile."""
