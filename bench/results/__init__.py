"""Results: the result store (one RunRecord per run, result.json) and the published references
with their drift check and measured tolerances."""
