"""Tests of mlopsctl.service."""
