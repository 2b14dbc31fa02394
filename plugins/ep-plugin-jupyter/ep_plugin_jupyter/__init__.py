"""ep-plugin-jupyter: can this host run a Jupyter notebook?

An ExecutionPlanner plugin (entry point ``jupyter`` in the ``ep_server``
group). It claims the ``uri://jupyter-notebook`` task type and the IVOA
ExecutionBroker's ``jupyter-notebook-1.0``, checks the notebook's location,
the kernel languages asked for and the resources, and offers the jupyter-hub
or binder-hub services configured in ``[plugin.jupyter]``. See README.md.
"""

from __future__ import annotations

from ep_plugin_jupyter.hooks import ep_claims, ep_configure, ep_evaluate

__all__ = ["ep_claims", "ep_configure", "ep_evaluate"]
