"""Reports about the spot migration: monthly cost (`cost`) and migration status (`migration`).

Controller-side code: the playbooks `cost_report.yml`, `migration_status.yml` and
`decommission_railway_bulk.yml` call it through the repo modules in plugins/modules, and each
package has a command line (`python -m agency_os_spot.reporting.cost`, `python -m agency_os_spot.reporting.migration`).
"""
