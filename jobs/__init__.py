"""The job core, below the HTTP API (app/) and the Celery worker (worker/), which both use it:
settings, the database (db, models, crud, dataset_store), where files live (storage/), the
job state machine (state.py: every change of a job's status), submitting a job (submit.py),
the queue (queue.py), the sweeper and the job metrics. No FastAPI and no Celery task here;
docs/architecture.md draws the layers."""
