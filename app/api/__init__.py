"""HTTP routes, one module per resource, and their shared dependencies."""
