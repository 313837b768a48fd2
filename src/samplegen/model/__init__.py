"""The networks: the VAE and the plain auto-encoder baseline."""
