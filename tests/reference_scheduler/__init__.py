"""An independent, naive vLLM-style rank (facts sections 0, a, c, e), for cross-checking the engine.

Written from the fact sheet's rules, sharing no code with `actors.engine`: plain lists and
dicts, one pass at a time, no macro-stepping. See `rank.NaiveRank`.
"""
