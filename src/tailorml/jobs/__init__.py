"""The jobs wing: one module per command that turns a config and a run directory into files
and a result object (`run(config, ...) -> Result`). The CLI prints the result; the library
below does the work. Jobs import the library; nothing in the library imports a job.
"""
