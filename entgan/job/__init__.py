"""What a job is, below everything else: its file (`reader`) and typed spec (`spec`), the edges'
image folders (`data`, the bundled demo set in `demo_data`), object storage (`storage`), the
lifecycle's triggers and stage states (`lifecycle`), and keeping credentials out of output (`redact`)."""
