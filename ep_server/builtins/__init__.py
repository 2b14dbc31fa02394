"""Plugins shipped with ep-server, registered through the same entry-point group
(``ep_server``) as third-party plugins, so an operator blocks them the same way."""
