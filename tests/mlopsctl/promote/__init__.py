"""Tests of mlopsctl.promote."""
