"""Tests of the task library (`entgan/library/`)."""
