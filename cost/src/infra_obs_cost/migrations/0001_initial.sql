-- The daily records, the rejects, the batches that wrote them, and the digest of what each day's last run produced
-- (a rerun that produces the same skips the day without reading its rows). Portable SQL: SQLite, MariaDB and PolarDB for
-- MySQL all run it; {table_options} is the engine and character set on MySQL, nothing on SQLite.
CREATE TABLE IF NOT EXISTS utilisation_daily (
    account_id CHAR(12) NOT NULL,
    region VARCHAR(32) NOT NULL,
    service VARCHAR(16) NOT NULL,
    resource_id VARCHAR(63) NOT NULL,
    metric VARCHAR(32) NOT NULL,
    statistic VARCHAR(8) NOT NULL,
    day DATE NOT NULL,
    team VARCHAR(63) NOT NULL,
    value DOUBLE NOT NULL,
    samples INTEGER NOT NULL,
    batch_id CHAR(32) NOT NULL,
    PRIMARY KEY (account_id, region, service, resource_id, metric, statistic, day)
){table_options};
CREATE INDEX utilisation_daily_team_day ON utilisation_daily (team, day);
CREATE INDEX utilisation_daily_day ON utilisation_daily (day);
CREATE TABLE IF NOT EXISTS utilisation_rejects (
    account_id VARCHAR(64) NOT NULL,
    region VARCHAR(64) NOT NULL,
    service VARCHAR(16) NOT NULL,
    resource_id VARCHAR(64) NOT NULL,
    metric VARCHAR(32) NOT NULL,
    day DATE NOT NULL,
    reason VARCHAR(32) NOT NULL,
    samples INTEGER NOT NULL,
    example VARCHAR(64) NOT NULL,
    batch_id CHAR(32) NOT NULL,
    PRIMARY KEY (account_id, region, service, resource_id, metric, day, reason)
){table_options};
CREATE INDEX utilisation_rejects_day ON utilisation_rejects (day);
CREATE TABLE IF NOT EXISTS collection_batches (
    batch_id CHAR(32) NOT NULL PRIMARY KEY,
    source VARCHAR(16) NOT NULL,
    day DATE NOT NULL,
    finished_at VARCHAR(32) NOT NULL,
    records_added INTEGER NOT NULL,
    records_changed INTEGER NOT NULL,
    rejects_added INTEGER NOT NULL,
    rejects_changed INTEGER NOT NULL
){table_options};
CREATE TABLE IF NOT EXISTS collected_days (
    source VARCHAR(16) NOT NULL,
    day DATE NOT NULL,
    content_digest CHAR(64) NOT NULL,
    PRIMARY KEY (source, day)
){table_options};
