"""mlopsctl: keeps a GitOps ML platform repository in step with an MLflow model registry."""

__version__ = "0.1.0"
