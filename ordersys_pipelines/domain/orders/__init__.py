"""Orders: the state machine, reservation, and operator transitions (cancel, ship, deliver)."""
