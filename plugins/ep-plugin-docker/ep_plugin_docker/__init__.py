"""ep-plugin-docker: can this host run that docker container?

An EP plugin (entry point ``docker`` in the ``ep_server`` group, naming
:mod:`ep_plugin_docker.hooks`). It claims the docker-container task type,
under the IVOA note's URI and the IVOA ExecutionBroker's, reads the taskinfo
(image reference, platform, privileges, networking and ports), checks it
against the host and the site's policy in ``[plugin.docker]``, and offers the
configured services. See README.md for the configuration keys, the reason
codes and the layout of the modules.
"""
