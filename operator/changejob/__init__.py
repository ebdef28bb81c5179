"""kube-changejob: run a Kubernetes Job when watched resources change."""

__version__ = "0.1.0"
