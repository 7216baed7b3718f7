"""Durable training jobs: a job's whole state is its database row."""
