"""Fixtures of the security suite: the same cluster and operator fixtures as the integration suite.

Each test here reproduces one finding of a hostile review (a tenant reading another's Secret through
status, a costly field path, a forged admission review, a late write from a replica that lost its
shard, ...) against the real local control plane, and fails if the finding comes back.
"""

from operator_fixtures import *  # noqa: F403 - registers the operator fixtures (crd, kube, operator, ...)
from rbac_fixtures import *  # noqa: F403 - registers admin, admin_kube, chart_rbac, chart_operator
