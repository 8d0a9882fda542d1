"""Tests of the scripts beside mlopsctl: the demo, the e2e branch, the local MLflow."""
