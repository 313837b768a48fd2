"""Latent points → notes: reconstruct, interpolate, sample, perturb."""
