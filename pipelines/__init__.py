"""EntGAN's KFP pipeline, built from a job file."""
