"""Execution: the order state machine, the write-ahead journal, one executor for replay, shadow
and live, maker logic, positions and the trade lifecycle, reconciliation."""
