"""Tests of mlopsctl.diff."""
