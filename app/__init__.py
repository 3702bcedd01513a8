"""HTTP service: validates requests, stores jobs, answers. The ML work happens in the worker."""
