"""infra-obs-quality: service-quality checks (black-box HTTP, TCP and gRPC health with latency over a burst; Consul
registration and Prometheus scrapes as white-box checks), run once as the release gate or on a schedule as a
standing checker that exposes its results as metrics."""
