"""``make cluster``: a replicated EP site on one machine, for trying it out.

PostgreSQL (a throwaway server of its own), ``ep-server migrate``, three
``ep-server serve`` replicas sharing that ledger, and HAProxy in front of
them on one port, balancing calls. Run with ``python -m tools.cluster`` from
the repository (see ``__main__``); it is a development tool, not part of the
installed package, since it installs HAProxy with apt-get and starts
PostgreSQL as the ``postgres`` user.
"""
