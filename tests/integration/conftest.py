"""Fixtures of the integration suite: the cluster fixtures (`cluster`, `api_client`, `namespace`) come
from tests/cluster_fixtures.py through tests/conftest.py; the ones that run the operator as a local
process (crd, kube, operator, ...) live in operator_fixtures.py and are registered here.
"""

from operator_fixtures import *  # noqa: F403 - registers the operator fixtures (crd, kube, operator, ...)
from rbac_fixtures import *  # noqa: F403 - registers admin, admin_kube, chart_rbac, chart_operator
