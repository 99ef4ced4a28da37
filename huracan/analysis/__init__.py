"""Learning from trades: performance metrics, and (to come) the win and loss analyzers and the
post-exit tracker."""
