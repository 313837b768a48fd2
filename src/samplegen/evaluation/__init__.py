"""How good a run is: the measures, the report, the phase round trip."""
