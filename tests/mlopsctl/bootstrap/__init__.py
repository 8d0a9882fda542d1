"""Tests of mlopsctl.bootstrap."""
