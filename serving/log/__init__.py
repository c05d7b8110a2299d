"""What the server remembers: the prediction log and its records, its retention, and the feedback
that labels earlier predictions (ids, first-label claims, rate limit)."""
