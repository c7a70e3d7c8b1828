"""Tests of the whole system: end-to-end runs, load, security, reliability."""
