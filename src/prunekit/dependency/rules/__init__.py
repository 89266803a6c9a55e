"""The coupling rules, one module per op family, mixed into ``CouplingTracer``."""
