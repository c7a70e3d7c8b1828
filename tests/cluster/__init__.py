"""Tests of the cluster side (`entgan/cluster/`)."""
