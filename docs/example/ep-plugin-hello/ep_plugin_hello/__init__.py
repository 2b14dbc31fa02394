"""An example EP plugin: offers a "hello" service for the uri://hello-world task type."""
