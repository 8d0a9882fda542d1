"""What the tests share: the repository's paths, trees to break, loopback servers, the GitHub
stand-in, a real MLflow and kube-apiserver, the local run of the platform, Chromium. Fixture
modules here are pytest plugins, named in tests/conftest.py's `pytest_plugins`."""
