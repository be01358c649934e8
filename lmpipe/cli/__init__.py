"""The command line (`lmpipe`, main), the local services `make serve` starts (services, serve), and the
tables and environment they share. Runs in the user's shell; flows are started from here by name."""
