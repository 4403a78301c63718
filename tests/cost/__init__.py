"""Tests of the cost system (cost/ and its lab, scripts/lab_aws.py): a package, so its conftest does not shadow
tests/conftest.py (which test_artifact.py imports as `conftest`)."""
