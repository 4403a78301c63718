"""infra-obs-cost: CloudWatch utilisation series into validated, idempotent daily records per resource."""

__version__ = "0.3.0"
