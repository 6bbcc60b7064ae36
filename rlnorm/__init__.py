"""rlnorm: an A2C framework whose internal scales are correct by construction and visible."""
