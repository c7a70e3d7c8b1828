"""`entgan run` on one machine: the run itself through kfp.local (`run`), pre-warmed task
processes (`forkserver`), kfp.local's output (`kfp_output`), progress in the terminal
(`progress`), and what a Ctrl-C or SIGTERM leaves behind (`interrupted`)."""
