"""Tests of mlopsctl.commands."""
