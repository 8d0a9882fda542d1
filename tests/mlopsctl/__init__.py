"""Tests of scripts/mlopsctl, one directory per subpackage, one module per module."""
