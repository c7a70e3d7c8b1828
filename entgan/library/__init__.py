"""The task library in MLflow: the registry of one model per data type (`registry`), each version
an MLflow pyfunc model (`pyfunc`, `pyfunc_code`), images from champions (`generate`) and their
lineage (`lineage`), a run's outcome (`outcome`), `entgan status` (`status`), what people see
(`report`), and a quick check that the tracking server answers (`server_check`)."""
