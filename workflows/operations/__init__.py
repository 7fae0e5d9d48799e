"""Podium's own operations (not business processes): the daily KPI snapshot and the SLA-risk
sweep, started by Temporal Schedules that `podium up` keeps."""
