"""The UniCorn self-play loop (method.md §2-§3) on the engine's public API: recipes as data, the proposer, solver
and judge roles, the driver that keeps the engine full, rejection sampling and the CPR builder. It never imports
the toy world's oracle, sampler, renderer or splits (tests/toyworld/test_oracle_isolation.py)."""
