"""Celery worker: runs pipeline jobs and moves them through their states in the database."""
