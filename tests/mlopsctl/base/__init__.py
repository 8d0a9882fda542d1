"""Tests of mlopsctl.base."""
