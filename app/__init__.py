"""HTTP service: validates requests, answers. The job core it uses (database, storage, state
machine, queue) is jobs/; the ML work happens in the worker."""
