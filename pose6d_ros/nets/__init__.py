"""Networks (detector, coordinate network) and their losses."""
