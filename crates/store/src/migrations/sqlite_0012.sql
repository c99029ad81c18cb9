-- Telephone preference screening (PECR reg 21): the TPS and CTPS lists
-- loaded by `veto tps import`, each replaced whole by the next import.
CREATE TABLE tps_numbers (
    list      TEXT NOT NULL,    -- 'tps' or 'ctps'
    number    TEXT NOT NULL,    -- E.164
    listed_on BIGINT NOT NULL,  -- the listing day, microseconds since the epoch (midnight UTC)
    PRIMARY KEY (number, list)
);
CREATE INDEX tps_numbers_list ON tps_numbers (list);

CREATE TABLE tps_imports (
    list        TEXT PRIMARY KEY,
    as_of       BIGINT NOT NULL, -- the date of the list data: the screening date
    imported_at BIGINT NOT NULL,
    source      TEXT NOT NULL,
    numbers     BIGINT NOT NULL
);

-- Decisions on the phone channel find contacts by number.
CREATE INDEX contacts_phone ON contacts (phone);
