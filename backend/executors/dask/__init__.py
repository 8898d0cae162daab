"""The Dask executor: agent turns on Dask workers (see executor.py on the project host,
remote.py on the workers). Importing this package needs no `distributed`; running it does."""
