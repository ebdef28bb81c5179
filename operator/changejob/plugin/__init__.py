"""``kubectl changejob``: the kubectl plugin (console script ``kubectl-changejob``).

``main`` parses the command line and maps every failure to one line and an exit code; ``client``
loads the kubeconfig like kubectl and makes the few API calls; ``why`` builds the account of one
ChangeTriggeredJob from its object and its Jobs, without I/O.
"""
