"""Tests of mlopsctl.validate.schemas."""
