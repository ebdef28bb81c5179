"""kube-changejob: run a Kubernetes Job when watched resources change."""

from importlib import metadata

try:
    # The version lives in one place, pyproject.toml; the installed distribution carries it.
    __version__ = metadata.version("kube-changejob")
except metadata.PackageNotFoundError:  # a source tree on sys.path without `pip install`
    __version__ = "0+unknown"
