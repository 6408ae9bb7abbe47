"""The randomized chaos suite: random fault schedules over a small scenario, invariants after each run."""
