"""Demo dataset (procedurally rendered obstacle images) for EntGAN."""
