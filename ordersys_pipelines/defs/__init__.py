"""Where each area declares what it adds to the Definitions: one module per area, each with
`build_defs(settings) -> dg.Definitions` (assets, jobs, sensors, schedules). The assets, ops and
sensors themselves live in assets/, jobs/ and sensors/; a module here only puts them together,
with the settings read when the code location loads."""

from ordersys_pipelines.defs import analytics, imports, notifications, operations, refunds, workflow

AREAS = (imports, workflow, refunds, notifications, analytics, operations)
