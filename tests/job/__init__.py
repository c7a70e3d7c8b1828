"""Tests of the job layer (`entgan/job/`)."""
