-- The findings of each evaluated window (findings.py), keyed by resource, rule and the window's last day, with their
-- evidence as JSON; and one row per write that changed them. A window's findings are replaced as a set: a finding a
-- new evaluation no longer gives is removed in the same transaction.
CREATE TABLE IF NOT EXISTS findings (
    account_id CHAR(12) NOT NULL,
    region VARCHAR(32) NOT NULL,
    service VARCHAR(16) NOT NULL,
    resource_id VARCHAR(63) NOT NULL,
    rule VARCHAR(32) NOT NULL,
    window_end DATE NOT NULL,
    team VARCHAR(63) NOT NULL,
    days INTEGER NOT NULL,
    matched_days INTEGER NOT NULL,
    evidence TEXT NOT NULL,
    instance_type VARCHAR(32) NOT NULL,
    monthly_saving DOUBLE,
    batch_id CHAR(32) NOT NULL,
    PRIMARY KEY (account_id, region, service, resource_id, rule, window_end)
){table_options};
CREATE INDEX findings_team_window ON findings (team, window_end);
CREATE TABLE IF NOT EXISTS findings_batches (
    batch_id CHAR(32) NOT NULL PRIMARY KEY,
    window_end DATE NOT NULL,
    finished_at VARCHAR(32) NOT NULL,
    added INTEGER NOT NULL,
    changed INTEGER NOT NULL,
    removed INTEGER NOT NULL
){table_options};
