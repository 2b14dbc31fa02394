"""ep-plugin-jupyter: can this host run a Jupyter notebook?

An ExecutionPlanner plugin (entry point ``jupyter`` in the ``ep_server``
group, naming :mod:`ep_plugin_jupyter.hooks`). It claims the
``uri://jupyter-notebook`` task type and the IVOA ExecutionBroker's
``jupyter-notebook-1.0``, checks the notebook's location, the kernel
languages asked for and the resources, and offers the jupyter-hub or
binder-hub services configured in ``[plugin.jupyter]``. See README.md for
the configuration keys, the reason codes and the layout of the modules.
"""
