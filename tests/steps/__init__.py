"""Tests of the pipeline's steps (`entgan/steps/`)."""
