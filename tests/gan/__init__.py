"""Tests of the GAN layer (`entgan/gan/`)."""
