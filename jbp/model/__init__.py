"""The model: the seed's equations (forward, backward), activations, losses, networks."""
