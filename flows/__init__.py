"""Prefect flows composing the stages in `tasks`."""
