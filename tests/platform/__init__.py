"""Tests of the platform itself: manifests, images, workflows, dashboards, monitoring values."""
