"""Tests of the evaluation layer (`entgan/evaluation/`)."""
