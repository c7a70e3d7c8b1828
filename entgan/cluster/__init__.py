"""Running on a Kubeflow cluster: upload and schedule through `kfp.Client` (`kfp_api`), and
`entgan preflight`'s checks of the cluster (`preflight`)."""
