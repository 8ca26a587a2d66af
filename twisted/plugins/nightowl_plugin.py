from twisted.application.service import ServiceMaker

nightowl = ServiceMaker(
    "nightowl",
    "nightowl.tap",
    "Laravel Nightwatch ingest agent: SQLite buffer, PostgreSQL drain",
    "nightowl",
)
