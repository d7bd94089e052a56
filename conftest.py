"""The repository's pytest entry: the kit's behaviour lives in its plugin."""
pytest_plugins = ["ipcmatrix.plugin"]
