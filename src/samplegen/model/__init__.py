"""The networks: the VAE, the plain auto-encoder baseline, and the PCA baseline they start from and must beat."""
