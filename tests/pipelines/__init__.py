"""Tests of the KFP pipeline (`pipelines/`)."""
