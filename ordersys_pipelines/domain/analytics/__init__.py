"""Analytics: daily KPIs and the customer leaderboard, computed by SQL and kept in Redis."""
