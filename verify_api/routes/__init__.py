"""Routes of the verification API, one module per resource."""
