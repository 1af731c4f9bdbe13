"""The Prefect flows of this repository: thin flow files (parameters, tasks, calls into the
agency_os_spot library). Installed with the library as `agency_os_spot.flows`, so deployments
name them `agency_os_spot.flows.<module>:<flow>` and an application keeps its own `flows`."""
