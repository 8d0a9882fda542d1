"""Tests of mlopsctl.validate."""
