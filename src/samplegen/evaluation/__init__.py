"""How good a run is: the measures, the PCA baseline, the report, the phase round trip."""
