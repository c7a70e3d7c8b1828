"""Tests of the local runner (`entgan/local/`)."""
